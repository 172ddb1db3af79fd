-- The builder app's and operators' surface: Supabase roles (created when missing), Row
-- Level Security, the least-privilege role of the service, restart requests, the
-- project_worker_health view and the start/stop/restart RPC functions.

-- Supabase compatibility without Supabase. On Supabase these exist and are left alone;
-- on plain PostgreSQL they are created the way Supabase defines them. Roles belong to
-- the cluster, so the down migration never drops them.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('anon', 'NOLOGIN NOINHERIT'),
        ('authenticated', 'NOLOGIN NOINHERIT'),
        ('service_role', 'NOLOGIN NOINHERIT BYPASSRLS'),
        ('reconciler_service', 'NOLOGIN')) AS roles(name, options)
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I %s', r.name, r.options);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by a migration of another database of the cluster
            END;
        END IF;
    END LOOP;
END
$$;

COMMENT ON ROLE reconciler_service IS
    'Privileges of the reconciler service: read desired state and definitions, write workflow_workers. Log in as a member: CREATE ROLE reconciler LOGIN PASSWORD ''...'' IN ROLE reconciler_service.';

-- What this migration created, so that its down migration removes only that.
CREATE TABLE reconciler_created (object text PRIMARY KEY);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'auth') THEN
        CREATE SCHEMA auth;
        INSERT INTO reconciler_created VALUES ('schema auth');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'auth' AND p.proname = 'uid') THEN
        -- As Supabase defines it: the sub claim of the request's JWT.
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
            SELECT nullif(coalesce(
                current_setting('request.jwt.claim.sub', true),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            ), '')::uuid
        $f$;
        INSERT INTO reconciler_created VALUES ('function auth.uid');
    END IF;
END
$$;

-- Supabase already lets its roles use auth (and may not let this migration grant it).
DO $$
BEGIN
    GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, reconciler_service;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'schema auth: usage not granted here (%); Supabase grants it to its roles', SQLERRM;
END
$$;

-- Restart requests. Writing restart_requested_at (restart_project_worker does) makes the
-- trigger bump generation and record it in restart_generation: the reconciler replaces
-- a worker started before that generation instead of reloading it.
ALTER TABLE projects
    ADD COLUMN restart_requested_at timestamptz NULL,
    ADD COLUMN restart_generation bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN projects.restart_requested_at IS
    'When a restart of the worker was last requested (restart_project_worker). Setting it bumps generation.';
COMMENT ON COLUMN projects.restart_generation IS
    'The generation of the last restart request: a worker started before it is replaced, not reloaded. Maintained by a trigger.';

ALTER TABLE projects ALTER COLUMN owner_id SET DEFAULT auth.uid();

CREATE OR REPLACE FUNCTION reconciler_projects_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM reconciler_check_worker_options(NEW.worker_options);
    IF TG_OP = 'UPDATE' THEN
        IF NEW.worker_options IS DISTINCT FROM OLD.worker_options
           OR NEW.task_queue_name IS DISTINCT FROM OLD.task_queue_name THEN
            NEW.generation := greatest(NEW.generation, OLD.generation + 1);
        END IF;
        IF NEW.restart_requested_at IS DISTINCT FROM OLD.restart_requested_at THEN
            NEW.generation := greatest(NEW.generation, OLD.generation + 1);
            NEW.restart_generation := NEW.generation;
        END IF;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

-- Trigger functions that bump generation run as the schema owner, so that nobody needs
-- (or gets) the right to call reconciler_bump_generation directly.
ALTER FUNCTION reconciler_workflows_after_write() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION reconciler_compiled_workflows_after_write() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION reconciler_components_after_write() SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE EXECUTE ON FUNCTION reconciler_bump_generation(uuid) FROM PUBLIC;

-- Row Level Security: app users see and change only their own projects' rows. The
-- table owner and service_role (BYPASSRLS) see everything; the service reads through
-- its own policies.
ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE compiled_workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE components ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_workers ENABLE ROW LEVEL SECURITY;

CREATE POLICY projects_owner ON projects FOR ALL TO authenticated
    USING (owner_id = (SELECT auth.uid()))
    WITH CHECK (owner_id = (SELECT auth.uid()));

CREATE POLICY workflows_owner ON workflows FOR ALL TO authenticated
    USING (EXISTS (SELECT 1 FROM projects p WHERE p.id = workflows.project_id AND p.owner_id = (SELECT auth.uid())))
    WITH CHECK (EXISTS (SELECT 1 FROM projects p WHERE p.id = workflows.project_id AND p.owner_id = (SELECT auth.uid())));

CREATE POLICY compiled_workflows_owner ON compiled_workflows FOR ALL TO authenticated
    USING (EXISTS (SELECT 1 FROM workflows w JOIN projects p ON p.id = w.project_id
                   WHERE w.id = compiled_workflows.workflow_id AND p.owner_id = (SELECT auth.uid())))
    WITH CHECK (EXISTS (SELECT 1 FROM workflows w JOIN projects p ON p.id = w.project_id
                        WHERE w.id = compiled_workflows.workflow_id AND p.owner_id = (SELECT auth.uid())));

CREATE POLICY components_owner ON components FOR ALL TO authenticated
    USING (EXISTS (SELECT 1 FROM projects p WHERE p.id = components.project_id AND p.owner_id = (SELECT auth.uid())))
    WITH CHECK (EXISTS (SELECT 1 FROM projects p WHERE p.id = components.project_id AND p.owner_id = (SELECT auth.uid())));

CREATE POLICY workflow_workers_owner ON workflow_workers FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM projects p WHERE p.id = workflow_workers.project_id AND p.owner_id = (SELECT auth.uid())));

CREATE POLICY projects_service ON projects FOR SELECT TO reconciler_service USING (true);
CREATE POLICY workflows_service ON workflows FOR SELECT TO reconciler_service USING (true);
CREATE POLICY compiled_workflows_service ON compiled_workflows FOR SELECT TO reconciler_service USING (true);
CREATE POLICY components_service ON components FOR SELECT TO reconciler_service USING (true);
CREATE POLICY workflow_workers_service ON workflow_workers FOR ALL TO reconciler_service USING (true) WITH CHECK (true);

-- Privileges. Supabase grants everything on public tables to anon and authenticated by
-- default; take that back and give exactly what the app needs. Users never write
-- generation, restart_generation or workflow_workers.
REVOKE ALL ON projects, workflows, compiled_workflows, components, workflow_workers FROM anon, authenticated;
GRANT SELECT, DELETE ON projects TO authenticated;
GRANT INSERT (owner_id, name, task_queue_name, desired_status, worker_options) ON projects TO authenticated;
GRANT UPDATE (name, task_queue_name, desired_status, worker_options, restart_requested_at) ON projects TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON workflows TO authenticated;
GRANT SELECT, INSERT, DELETE ON compiled_workflows TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON components TO authenticated;
GRANT SELECT ON workflow_workers TO authenticated;

GRANT ALL ON projects, workflows, compiled_workflows, components, workflow_workers TO service_role;

GRANT SELECT ON projects, workflows, compiled_workflows, components TO reconciler_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON workflow_workers TO reconciler_service;

-- Health: one row per project, desired against actual, from the project's newest
-- worker row. It runs with the caller's privileges, so app users see their projects.
CREATE VIEW project_worker_health WITH (security_invoker = true) AS
SELECT p.id                                   AS project_id,
       p.name                                 AS project_name,
       p.owner_id,
       p.task_queue_name,
       p.desired_status,
       coalesce(w.status, 'stopped')          AS actual_status,
       CASE WHEN p.desired_status = 'running' THEN
                w.status = 'running'
                AND w.last_heartbeat > now() - 2 * make_interval(secs => coalesce((w.metadata->>'heartbeat_interval_seconds')::float8, 10))
                AND w.metadata->>'poll_error' IS NULL
            ELSE coalesce(w.status, 'stopped') IN ('stopped', 'failed')
       END                                    AS is_healthy,
       w.worker_id,
       w.host,
       w.process_id,
       p.generation                           AS generation_desired,
       w.generation                           AS generation_observed,
       w.last_heartbeat,
       coalesce(w.metadata->>'error', w.metadata->>'poll_error', w.metadata->>'last_error') AS last_error,
       coalesce((w.metadata->>'restarts')::int, 0) AS restarts,
       (w.metadata->>'next_retry_at')::timestamptz AS next_retry_at,
       w.metadata->>'replica'                 AS owner_replica,
       w.metadata->'workflow_errors'          AS workflow_errors,
       w.started_at,
       w.stopped_at
FROM projects p
LEFT JOIN LATERAL (
    SELECT ww.status, ww.worker_id, ww.host, ww.process_id, ww.generation, ww.last_heartbeat,
           ww.metadata, ww.started_at, ww.stopped_at
    FROM workflow_workers ww
    WHERE ww.project_id = p.id
    ORDER BY ww.started_at DESC, ww.id DESC
    LIMIT 1
) w ON true;

COMMENT ON VIEW project_worker_health IS
    'One row per project: desired vs actual status and health of its newest worker. is_healthy: running with a heartbeat younger than twice the heartbeat interval and polling, or stopped as desired.';

REVOKE ALL ON project_worker_health FROM anon, authenticated;
GRANT SELECT ON project_worker_health TO authenticated, service_role, reconciler_service;

-- RPC. They run with the caller's privileges: Row Level Security decides which
-- projects a caller may act on, and an unknown id and another user's project give
-- the same error.
CREATE FUNCTION reconciler_set_desired(project_id uuid, desired text, restart boolean)
RETURNS project_worker_health
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    result project_worker_health;
BEGIN
    UPDATE projects
    SET desired_status       = desired,
        restart_requested_at = CASE WHEN restart THEN clock_timestamp() ELSE restart_requested_at END
    WHERE projects.id = reconciler_set_desired.project_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project % not found', reconciler_set_desired.project_id USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO result FROM project_worker_health h WHERE h.project_id = reconciler_set_desired.project_id;
    RETURN result;
END;
$$;

CREATE FUNCTION start_project_worker(project_id uuid) RETURNS project_worker_health
LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT * FROM reconciler_set_desired(project_id, 'running', false);
$$;

CREATE FUNCTION stop_project_worker(project_id uuid) RETURNS project_worker_health
LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT * FROM reconciler_set_desired(project_id, 'stopped', false);
$$;

CREATE FUNCTION restart_project_worker(project_id uuid) RETURNS project_worker_health
LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT * FROM reconciler_set_desired(project_id, 'running', true);
$$;

COMMENT ON FUNCTION start_project_worker(uuid) IS 'Sets desired_status = running; returns the project''s health row. Callable by the project''s owner, service_role and the schema owner.';
COMMENT ON FUNCTION stop_project_worker(uuid) IS 'Sets desired_status = stopped; returns the project''s health row.';
COMMENT ON FUNCTION restart_project_worker(uuid) IS 'Replaces the project''s worker with a new one (and starts it if stopped); returns the health row.';

REVOKE EXECUTE ON FUNCTION start_project_worker(uuid), stop_project_worker(uuid), restart_project_worker(uuid),
    reconciler_set_desired(uuid, text, boolean) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION start_project_worker(uuid), stop_project_worker(uuid), restart_project_worker(uuid),
    reconciler_set_desired(uuid, text, boolean) TO authenticated, service_role;
