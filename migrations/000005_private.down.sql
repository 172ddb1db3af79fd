-- Back to migration 4: the internals return to public under their old names, with the
-- bodies that call each other by those names, and the RPC functions share their
-- helper again. The migrations table stays closed to the API roles (see the up
-- migration).

CREATE FUNCTION public.reconciler_set_desired(project_id uuid, desired text, restart boolean)
RETURNS public.project_worker_health
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
REVOKE EXECUTE ON FUNCTION public.reconciler_set_desired(uuid, text, boolean) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE EXECUTE ON FUNCTION public.reconciler_set_desired(uuid, text, boolean) FROM anon;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION public.reconciler_set_desired(uuid, text, boolean) TO authenticated, service_role;

CREATE OR REPLACE FUNCTION public.start_project_worker(project_id uuid) RETURNS public.project_worker_health
LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT * FROM reconciler_set_desired(project_id, 'running', false);
$$;

CREATE OR REPLACE FUNCTION public.stop_project_worker(project_id uuid) RETURNS public.project_worker_health
LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT * FROM reconciler_set_desired(project_id, 'stopped', false);
$$;

CREATE OR REPLACE FUNCTION public.restart_project_worker(project_id uuid) RETURNS public.project_worker_health
LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp AS $$
    SELECT * FROM reconciler_set_desired(project_id, 'running', true);
$$;

ALTER FUNCTION reconciler_private.set_updated_at() RENAME TO reconciler_set_updated_at;
ALTER FUNCTION reconciler_private.reconciler_set_updated_at() SET SCHEMA public;
ALTER FUNCTION reconciler_private.bump_generation(uuid) RENAME TO reconciler_bump_generation;
ALTER FUNCTION reconciler_private.reconciler_bump_generation(uuid) SET SCHEMA public;
ALTER FUNCTION reconciler_private.check_worker_options(jsonb) RENAME TO reconciler_check_worker_options;
ALTER FUNCTION reconciler_private.reconciler_check_worker_options(jsonb) SET SCHEMA public;
ALTER FUNCTION reconciler_private.projects_before_write() RENAME TO reconciler_projects_before_write;
ALTER FUNCTION reconciler_private.reconciler_projects_before_write() SET SCHEMA public;
ALTER FUNCTION reconciler_private.projects_notify() RENAME TO reconciler_projects_notify;
ALTER FUNCTION reconciler_private.reconciler_projects_notify() SET SCHEMA public;
ALTER FUNCTION reconciler_private.workflows_after_write() RENAME TO reconciler_workflows_after_write;
ALTER FUNCTION reconciler_private.reconciler_workflows_after_write() SET SCHEMA public;
ALTER FUNCTION reconciler_private.compiled_workflows_before_insert() RENAME TO reconciler_compiled_workflows_before_insert;
ALTER FUNCTION reconciler_private.reconciler_compiled_workflows_before_insert() SET SCHEMA public;
ALTER FUNCTION reconciler_private.compiled_workflows_immutable() RENAME TO reconciler_compiled_workflows_immutable;
ALTER FUNCTION reconciler_private.reconciler_compiled_workflows_immutable() SET SCHEMA public;
ALTER FUNCTION reconciler_private.compiled_workflows_after_write() RENAME TO reconciler_compiled_workflows_after_write;
ALTER FUNCTION reconciler_private.reconciler_compiled_workflows_after_write() SET SCHEMA public;
ALTER FUNCTION reconciler_private.components_after_write() RENAME TO reconciler_components_after_write;
ALTER FUNCTION reconciler_private.reconciler_components_after_write() SET SCHEMA public;

-- The bodies that call another internal function call it by its public name again.
CREATE OR REPLACE FUNCTION public.reconciler_projects_before_write() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
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

CREATE OR REPLACE FUNCTION public.reconciler_workflows_after_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'active' THEN
            PERFORM reconciler_bump_generation(NEW.project_id);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.status = 'active' THEN
            PERFORM reconciler_bump_generation(OLD.project_id);
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status
          OR ((NEW.name IS DISTINCT FROM OLD.name OR NEW.project_id IS DISTINCT FROM OLD.project_id)
              AND (NEW.status = 'active' OR OLD.status = 'active')) THEN
        PERFORM reconciler_bump_generation(NEW.project_id);
        IF NEW.project_id IS DISTINCT FROM OLD.project_id THEN
            PERFORM reconciler_bump_generation(OLD.project_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION public.reconciler_compiled_workflows_after_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    project uuid;
BEGIN
    SELECT project_id INTO project FROM workflows
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.workflow_id ELSE NEW.workflow_id END;
    IF project IS NOT NULL THEN
        PERFORM reconciler_bump_generation(project);
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION public.reconciler_components_after_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.is_active THEN
            PERFORM reconciler_bump_generation(NEW.project_id);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.is_active THEN
            PERFORM reconciler_bump_generation(OLD.project_id);
        END IF;
    ELSIF (OLD.is_active OR NEW.is_active)
          AND (NEW.name, NEW.implementation_language, NEW.implementation_code, NEW.is_active, NEW.project_id)
              IS DISTINCT FROM (OLD.name, OLD.implementation_language, OLD.implementation_code, OLD.is_active, OLD.project_id) THEN
        PERFORM reconciler_bump_generation(NEW.project_id);
        IF NEW.project_id IS DISTINCT FROM OLD.project_id THEN
            PERFORM reconciler_bump_generation(OLD.project_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- As created by migrations 2 and 3: executable by PUBLIC, but for the generation bump.
GRANT EXECUTE ON FUNCTION public.reconciler_set_updated_at(), public.reconciler_check_worker_options(jsonb),
    public.reconciler_projects_before_write(), public.reconciler_projects_notify(),
    public.reconciler_workflows_after_write(), public.reconciler_compiled_workflows_before_insert(),
    public.reconciler_compiled_workflows_immutable(), public.reconciler_compiled_workflows_after_write(),
    public.reconciler_components_after_write() TO PUBLIC;

ALTER TABLE reconciler_private.reconciler_created SET SCHEMA public;
DROP SCHEMA reconciler_private;
