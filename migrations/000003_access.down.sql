DROP FUNCTION IF EXISTS restart_project_worker(uuid);
DROP FUNCTION IF EXISTS stop_project_worker(uuid);
DROP FUNCTION IF EXISTS start_project_worker(uuid);
DROP FUNCTION IF EXISTS reconciler_set_desired(uuid, text, boolean);
DROP VIEW IF EXISTS project_worker_health;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'reconciler_service'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON projects, workflows, compiled_workflows, components, workflow_workers FROM %I', r);
        END IF;
    END LOOP;
END
$$;

DROP POLICY IF EXISTS workflow_workers_service ON workflow_workers;
DROP POLICY IF EXISTS components_service ON components;
DROP POLICY IF EXISTS compiled_workflows_service ON compiled_workflows;
DROP POLICY IF EXISTS workflows_service ON workflows;
DROP POLICY IF EXISTS projects_service ON projects;
DROP POLICY IF EXISTS workflow_workers_owner ON workflow_workers;
DROP POLICY IF EXISTS components_owner ON components;
DROP POLICY IF EXISTS compiled_workflows_owner ON compiled_workflows;
DROP POLICY IF EXISTS workflows_owner ON workflows;
DROP POLICY IF EXISTS projects_owner ON projects;
ALTER TABLE workflow_workers DISABLE ROW LEVEL SECURITY;
ALTER TABLE components DISABLE ROW LEVEL SECURITY;
ALTER TABLE compiled_workflows DISABLE ROW LEVEL SECURITY;
ALTER TABLE workflows DISABLE ROW LEVEL SECURITY;
ALTER TABLE projects DISABLE ROW LEVEL SECURITY;

GRANT EXECUTE ON FUNCTION reconciler_bump_generation(uuid) TO PUBLIC;
ALTER FUNCTION reconciler_components_after_write() SECURITY INVOKER RESET search_path;
ALTER FUNCTION reconciler_compiled_workflows_after_write() SECURITY INVOKER RESET search_path;
ALTER FUNCTION reconciler_workflows_after_write() SECURITY INVOKER RESET search_path;

CREATE OR REPLACE FUNCTION reconciler_projects_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM reconciler_check_worker_options(NEW.worker_options);
    IF TG_OP = 'UPDATE' THEN
        IF NEW.worker_options IS DISTINCT FROM OLD.worker_options
           OR NEW.task_queue_name IS DISTINCT FROM OLD.task_queue_name THEN
            NEW.generation := greatest(NEW.generation, OLD.generation + 1);
        END IF;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

ALTER TABLE projects ALTER COLUMN owner_id DROP DEFAULT;
ALTER TABLE projects DROP COLUMN IF EXISTS restart_generation, DROP COLUMN IF EXISTS restart_requested_at;

DO $$
BEGIN
    IF EXISTS (SELECT FROM reconciler_created WHERE object = 'function auth.uid') THEN
        DROP FUNCTION IF EXISTS auth.uid();
    END IF;
    IF EXISTS (SELECT FROM reconciler_created WHERE object = 'schema auth') THEN
        DROP SCHEMA IF EXISTS auth;
    ELSIF EXISTS (SELECT FROM pg_namespace WHERE nspname = 'auth') THEN
        BEGIN
            REVOKE USAGE ON SCHEMA auth FROM reconciler_service;
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
    END IF;
END
$$;
DROP TABLE IF EXISTS reconciler_created;
