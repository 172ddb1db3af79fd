-- Only the contract is reachable by Supabase's API roles.
--
-- Supabase's default privileges grant anon, authenticated and service_role everything
-- on each new table and function in public, and PostgREST exposes every function they
-- may execute as /rpc/<name>. So nothing internal stays in public: trigger functions,
-- the generation bump and the migrations' bookkeeping move to the schema
-- reconciler_private, on which the API roles get no USAGE (PostgREST does not expose
-- it, and no default privilege reaches it). What remains in public is the contract:
-- the five tables under RLS, project_leases and reconciler_replicas under RLS, the
-- project_worker_health view (security_invoker) and the three RPC functions.
--
-- Every function here runs with an empty search_path and names what it uses with its
-- schema, so that no object a user can create is ever picked up by mistake.

CREATE SCHEMA reconciler_private;
COMMENT ON SCHEMA reconciler_private IS
    'Internals of the workflow reconciler (trigger functions, bookkeeping). Not for the API roles: they have no USAGE here.';
REVOKE ALL ON SCHEMA reconciler_private FROM PUBLIC;

ALTER TABLE reconciler_created SET SCHEMA reconciler_private;

ALTER FUNCTION reconciler_set_updated_at() SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_set_updated_at() RENAME TO set_updated_at;
ALTER FUNCTION reconciler_bump_generation(uuid) SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_bump_generation(uuid) RENAME TO bump_generation;
ALTER FUNCTION reconciler_check_worker_options(jsonb) SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_check_worker_options(jsonb) RENAME TO check_worker_options;
ALTER FUNCTION reconciler_projects_before_write() SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_projects_before_write() RENAME TO projects_before_write;
ALTER FUNCTION reconciler_projects_notify() SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_projects_notify() RENAME TO projects_notify;
ALTER FUNCTION reconciler_workflows_after_write() SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_workflows_after_write() RENAME TO workflows_after_write;
ALTER FUNCTION reconciler_compiled_workflows_before_insert() SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_compiled_workflows_before_insert() RENAME TO compiled_workflows_before_insert;
ALTER FUNCTION reconciler_compiled_workflows_immutable() SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_compiled_workflows_immutable() RENAME TO compiled_workflows_immutable;
ALTER FUNCTION reconciler_compiled_workflows_after_write() SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_compiled_workflows_after_write() RENAME TO compiled_workflows_after_write;
ALTER FUNCTION reconciler_components_after_write() SET SCHEMA reconciler_private;
ALTER FUNCTION reconciler_private.reconciler_components_after_write() RENAME TO components_after_write;

-- The triggers keep calling the same functions (they refer to them by identity); the
-- bodies are rewritten to name everything with its schema.

CREATE OR REPLACE FUNCTION reconciler_private.set_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- Runs as the schema owner, so that a builder app user who may compile a workflow can
-- bump the generation without being allowed to write it.
CREATE OR REPLACE FUNCTION reconciler_private.bump_generation(project uuid) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
    UPDATE public.projects SET generation = generation + 1 WHERE id = project;
$$;
COMMENT ON FUNCTION reconciler_private.bump_generation(uuid) IS
    'Marks a project''s worker for reload. Called by triggers; the reconciler reacts through NOTIFY reconciler_projects.';

CREATE OR REPLACE FUNCTION reconciler_private.check_worker_options(opts jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF jsonb_typeof(opts) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'projects.worker_options must be a JSON object, got %', coalesce(jsonb_typeof(opts), 'null')
            USING ERRCODE = 'check_violation';
    END IF;
    FOR k, v IN SELECT key, value FROM jsonb_each(opts) LOOP
        IF k NOT IN ('max_concurrent_activities', 'max_concurrent_workflow_tasks',
                     'max_concurrent_local_activities', 'workflow_task_pollers', 'activity_task_pollers') THEN
            RAISE EXCEPTION 'projects.worker_options: unknown key "%"', k
                USING ERRCODE = 'check_violation',
                      HINT = 'allowed keys: max_concurrent_activities, max_concurrent_workflow_tasks, max_concurrent_local_activities, workflow_task_pollers, activity_task_pollers';
        END IF;
        IF jsonb_typeof(v) <> 'number' OR v::numeric <> trunc(v::numeric) OR v::numeric < 1 OR v::numeric > 10000 THEN
            RAISE EXCEPTION 'projects.worker_options.% must be an integer between 1 and 10000, got %', k, v
                USING ERRCODE = 'check_violation';
        END IF;
        -- The Temporal SDK needs two workflow-task slots and pollers (one is sticky).
        IF k IN ('max_concurrent_workflow_tasks', 'workflow_task_pollers') AND v::numeric < 2 THEN
            RAISE EXCEPTION 'projects.worker_options.% must be at least 2 (the worker keeps a sticky poll), got %', k, v
                USING ERRCODE = 'check_violation';
        END IF;
    END LOOP;
END;
$$;

-- Runs as the schema owner: it calls check_worker_options, which the API roles may not.
CREATE OR REPLACE FUNCTION reconciler_private.projects_before_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    PERFORM reconciler_private.check_worker_options(NEW.worker_options);
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

CREATE OR REPLACE FUNCTION reconciler_private.projects_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('reconciler_projects', OLD.id::text);
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT'
       OR NEW.desired_status IS DISTINCT FROM OLD.desired_status
       OR NEW.generation IS DISTINCT FROM OLD.generation
       OR NEW.task_queue_name IS DISTINCT FROM OLD.task_queue_name THEN
        PERFORM pg_notify('reconciler_projects', NEW.id::text);
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION reconciler_private.workflows_after_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'active' THEN
            PERFORM reconciler_private.bump_generation(NEW.project_id);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.status = 'active' THEN
            PERFORM reconciler_private.bump_generation(OLD.project_id);
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status
          OR ((NEW.name IS DISTINCT FROM OLD.name OR NEW.project_id IS DISTINCT FROM OLD.project_id)
              AND (NEW.status = 'active' OR OLD.status = 'active')) THEN
        PERFORM reconciler_private.bump_generation(NEW.project_id);
        IF NEW.project_id IS DISTINCT FROM OLD.project_id THEN
            PERFORM reconciler_private.bump_generation(OLD.project_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION reconciler_private.compiled_workflows_before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    latest integer;
    doc    jsonb;
BEGIN
    -- Serialise compiles of one workflow so that versions are assigned without races.
    PERFORM 1 FROM public.workflows WHERE id = NEW.workflow_id FOR NO KEY UPDATE;
    SELECT max(version) INTO latest FROM public.compiled_workflows WHERE workflow_id = NEW.workflow_id;
    IF NEW.version IS NULL THEN
        NEW.version := coalesce(latest, 0) + 1;
    ELSIF NEW.version <= coalesce(latest, 0) THEN
        RAISE EXCEPTION 'compiled_workflows.version must increase: workflow % is at version %, got %',
            NEW.workflow_id, latest, NEW.version
            USING ERRCODE = 'check_violation', HINT = 'leave version NULL to get the next one';
    END IF;

    BEGIN
        doc := NEW.workflow_code::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'compiled_workflows.workflow_code is not valid JSON: %', SQLERRM
            USING ERRCODE = 'invalid_text_representation';
    END;
    IF jsonb_typeof(doc) <> 'object' THEN
        RAISE EXCEPTION 'compiled_workflows.workflow_code must be a JSON object, got %', jsonb_typeof(doc)
            USING ERRCODE = 'check_violation';
    END IF;
    IF doc->'version' IS DISTINCT FROM '1'::jsonb THEN
        RAISE EXCEPTION 'compiled_workflows.workflow_code: "version" must be 1, got %', coalesce(doc->>'version', 'nothing')
            USING ERRCODE = 'check_violation';
    END IF;
    IF jsonb_typeof(doc->'start') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'compiled_workflows.workflow_code: "start" must name the first node'
            USING ERRCODE = 'check_violation';
    END IF;
    IF jsonb_typeof(doc->'nodes') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'compiled_workflows.workflow_code: "nodes" must be an object of node id -> node'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION reconciler_private.compiled_workflows_immutable() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    RAISE EXCEPTION 'compiled_workflows rows are immutable: insert a new version instead'
        USING ERRCODE = 'object_not_in_prerequisite_state';
END;
$$;

CREATE OR REPLACE FUNCTION reconciler_private.compiled_workflows_after_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    project uuid;
BEGIN
    SELECT project_id INTO project FROM public.workflows
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.workflow_id ELSE NEW.workflow_id END;
    IF project IS NOT NULL THEN
        PERFORM reconciler_private.bump_generation(project);
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION reconciler_private.components_after_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.is_active THEN
            PERFORM reconciler_private.bump_generation(NEW.project_id);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.is_active THEN
            PERFORM reconciler_private.bump_generation(OLD.project_id);
        END IF;
    ELSIF (OLD.is_active OR NEW.is_active)
          AND (NEW.name, NEW.implementation_language, NEW.implementation_code, NEW.is_active, NEW.project_id)
              IS DISTINCT FROM (OLD.name, OLD.implementation_language, OLD.implementation_code, OLD.is_active, OLD.project_id) THEN
        PERFORM reconciler_private.bump_generation(NEW.project_id);
        IF NEW.project_id IS DISTINCT FROM OLD.project_id THEN
            PERFORM reconciler_private.bump_generation(OLD.project_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- Moving a function keeps its grants: take back every one (Supabase's default
-- privileges granted them to anon, authenticated and service_role explicitly, which
-- REVOKE ... FROM PUBLIC did not remove).
DO $$
DECLARE
    f regprocedure;
    r text;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'reconciler_private'::regnamespace LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'reconciler_service'] LOOP
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', f, r);
            END IF;
        END LOOP;
    END LOOP;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'reconciler_service'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON reconciler_private.reconciler_created FROM %I', r);
        END IF;
    END LOOP;
END
$$;

-- The RPC functions: each does its own update (no helper for the API roles to reach).
-- They run with the caller's privileges, so Row Level Security decides which projects a
-- caller may act on; an unknown id and another user's project give the same error.
CREATE OR REPLACE FUNCTION public.start_project_worker(project_id uuid) RETURNS public.project_worker_health
LANGUAGE plpgsql SECURITY INVOKER SET search_path = '' AS $$
DECLARE
    result public.project_worker_health;
BEGIN
    UPDATE public.projects SET desired_status = 'running' WHERE id = start_project_worker.project_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project % not found', start_project_worker.project_id USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO result FROM public.project_worker_health h WHERE h.project_id = start_project_worker.project_id;
    RETURN result;
END;
$$;

CREATE OR REPLACE FUNCTION public.stop_project_worker(project_id uuid) RETURNS public.project_worker_health
LANGUAGE plpgsql SECURITY INVOKER SET search_path = '' AS $$
DECLARE
    result public.project_worker_health;
BEGIN
    UPDATE public.projects SET desired_status = 'stopped' WHERE id = stop_project_worker.project_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project % not found', stop_project_worker.project_id USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO result FROM public.project_worker_health h WHERE h.project_id = stop_project_worker.project_id;
    RETURN result;
END;
$$;

CREATE OR REPLACE FUNCTION public.restart_project_worker(project_id uuid) RETURNS public.project_worker_health
LANGUAGE plpgsql SECURITY INVOKER SET search_path = '' AS $$
DECLARE
    result public.project_worker_health;
BEGIN
    UPDATE public.projects SET desired_status = 'running', restart_requested_at = clock_timestamp()
    WHERE id = restart_project_worker.project_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project % not found', restart_project_worker.project_id USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO result FROM public.project_worker_health h WHERE h.project_id = restart_project_worker.project_id;
    RETURN result;
END;
$$;

DROP FUNCTION public.reconciler_set_desired(uuid, text, boolean);

-- The migrations table (golang-migrate's schema_migrations, created in public before
-- the first migration runs) is no business of the API roles: RLS with no policy for
-- them, and their privileges taken back. Its owner (the role that migrates) bypasses
-- RLS, so `migrate` and `reconciler migrate` work as before. This is not undone by the
-- down migration: reopening the table would serve nobody.
DO $$
DECLARE
    r text;
BEGIN
    IF to_regclass('public.schema_migrations') IS NOT NULL THEN
        ALTER TABLE public.schema_migrations ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON public.schema_migrations FROM PUBLIC;
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('REVOKE ALL ON public.schema_migrations FROM %I', r);
            END IF;
        END LOOP;
    END IF;
END
$$;
