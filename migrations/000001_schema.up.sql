-- The schema the builder app writes (projects, workflows, compiled_workflows,
-- components) and the one table the reconciler writes (workflow_workers).
-- Contract: SPEC section 3. Names and values here are fixed; add, never rename.

CREATE TABLE projects (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id        uuid        NULL,
    name            text        NOT NULL,
    task_queue_name text        NOT NULL,
    desired_status  text        NOT NULL DEFAULT 'stopped',
    generation      bigint      NOT NULL DEFAULT 1,
    worker_options  jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_task_queue_name_key UNIQUE (task_queue_name),
    CONSTRAINT projects_desired_status_check CHECK (desired_status IN ('running', 'stopped')),
    CONSTRAINT projects_task_queue_name_check CHECK (task_queue_name ~ '^[^[:space:]]{1,255}$' AND task_queue_name NOT LIKE '/\_sys/%'),
    CONSTRAINT projects_generation_check CHECK (generation >= 1),
    CONSTRAINT projects_worker_options_check CHECK (jsonb_typeof(worker_options) = 'object')
);

COMMENT ON TABLE projects IS
    'One row per builder project. The reconciler runs one Temporal worker per project whose desired_status is running.';
COMMENT ON COLUMN projects.owner_id IS
    'The Supabase auth user (auth.users.id) that owns the project; row level security compares it with auth.uid().';
COMMENT ON COLUMN projects.task_queue_name IS
    'The Temporal task queue the project''s worker polls; workflows of the project are started on it.';
COMMENT ON COLUMN projects.desired_status IS
    'What the builder app wants: running or stopped. The reconciler makes it so and reports in workflow_workers.';
COMMENT ON COLUMN projects.generation IS
    'Bumped by triggers whenever the worker must reload (compile, workflow activation, component or worker_options change, restart). Do not write it directly.';
COMMENT ON COLUMN projects.worker_options IS
    'Per-project worker tuning, e.g. {"max_concurrent_activities": 50, "max_concurrent_workflow_tasks": 50}. Unknown keys are rejected.';

CREATE TABLE workflows (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    status     text        NOT NULL DEFAULT 'draft',
    definition jsonb       NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflows_project_id_name_key UNIQUE (project_id, name),
    CONSTRAINT workflows_status_check CHECK (status IN ('draft', 'active', 'archived')),
    CONSTRAINT workflows_name_check CHECK (name ~ '^[^[:space:]]{1,255}$')
);

COMMENT ON TABLE workflows IS 'Workflows drawn in the builder. Only active ones are served.';
COMMENT ON COLUMN workflows.name IS 'The Temporal workflow type clients start; unique within the project.';
COMMENT ON COLUMN workflows.status IS 'draft | active | archived. A project''s worker serves its active workflows at their highest compiled version.';
COMMENT ON COLUMN workflows.definition IS 'The editor''s graph. The reconciler never reads it; it runs compiled_workflows.workflow_code.';

CREATE TABLE compiled_workflows (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id   uuid        NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    version       integer     NOT NULL,
    workflow_code text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT compiled_workflows_workflow_id_version_key UNIQUE (workflow_id, version),
    CONSTRAINT compiled_workflows_version_check CHECK (version >= 1),
    CONSTRAINT compiled_workflows_workflow_code_size_check CHECK (octet_length(workflow_code) <= 1048576)
);

COMMENT ON TABLE compiled_workflows IS
    'Immutable compiled versions of a workflow. Inserting one is "compile": the project''s worker reloads. Runs keep the version they started with.';
COMMENT ON COLUMN compiled_workflows.version IS
    'Increasing per workflow. Leave it NULL on insert to get the next one.';
COMMENT ON COLUMN compiled_workflows.workflow_code IS
    'The compiled definition: a JSON document in the format of SPEC section 4, at most 1 MiB.';

CREATE TABLE components (
    id                      uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id              uuid        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                    text        NOT NULL,
    implementation_language text        NOT NULL,
    implementation_code     text        NOT NULL,
    is_active               boolean     NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT components_project_id_name_key UNIQUE (project_id, name),
    CONSTRAINT components_implementation_language_check CHECK (implementation_language IN ('javascript')),
    CONSTRAINT components_name_check CHECK (name ~ '^[A-Za-z_$][A-Za-z0-9_$]{0,127}$'),
    CONSTRAINT components_name_not_builtin_check CHECK (name NOT IN ('echo', 'log')),
    CONSTRAINT components_implementation_code_size_check CHECK (octet_length(implementation_code) <= 1048576)
);

COMMENT ON TABLE components IS 'Custom activities. An active component can be called from a workflow''s activity node by its name.';
COMMENT ON COLUMN components.name IS 'The activity name used in definitions, and the name of the JavaScript function the code defines.';
COMMENT ON COLUMN components.implementation_code IS 'JavaScript defining a function named like the component; it receives the node input and returns (or resolves) the output.';

CREATE TABLE workflow_workers (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    worker_id       text        NOT NULL,
    project_id      uuid        NULL REFERENCES projects (id) ON DELETE SET NULL,
    task_queue_name text        NOT NULL,
    status          text        NOT NULL,
    host            text        NULL,
    process_id      text        NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    stopped_at      timestamptz NULL,
    last_heartbeat  timestamptz NULL,
    generation      bigint      NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT workflow_workers_worker_id_key UNIQUE (worker_id),
    CONSTRAINT workflow_workers_status_check CHECK (status IN ('starting', 'running', 'stopping', 'stopped', 'failed'))
);

CREATE INDEX workflow_workers_project_id_started_at_idx ON workflow_workers (project_id, started_at DESC);
CREATE INDEX workflow_workers_live_idx ON workflow_workers (project_id)
    WHERE status IN ('starting', 'running', 'stopping');

COMMENT ON TABLE workflow_workers IS
    'Written only by the reconciler: one row per worker instance it started. The newest row of a project is its current worker.';
COMMENT ON COLUMN workflow_workers.status IS
    'starting -> running -> stopping -> stopped, or failed with metadata->>''error''.';
COMMENT ON COLUMN workflow_workers.generation IS
    'The projects.generation this worker serves; equal to the project''s once a reload has been applied.';
COMMENT ON COLUMN workflow_workers.metadata IS
    'error, workflows (name -> compiled version served), workflow_errors (name -> why it is not served), components, restarts.';
COMMENT ON COLUMN workflow_workers.last_heartbeat IS
    'Refreshed every heartbeat interval while the worker lives; a stale value means the process is gone.';
