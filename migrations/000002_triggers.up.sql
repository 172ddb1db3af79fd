-- Triggers that turn the builder app's writes into work for the reconciler.
--
-- projects.generation is bumped whenever a project's worker must reload, and every
-- change the reconciler must act on (desired_status, generation, task queue, a new or
-- deleted project) sends NOTIFY reconciler_projects with the project id as payload.
-- The payload only says which project to look at: the reconciler re-reads the row.
-- No trigger sits on workflow_workers, so heartbeats never notify.

CREATE FUNCTION reconciler_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- reconciler_bump_generation runs as the schema owner so that a builder app user who
-- may compile a workflow can bump the generation without being allowed to write it.
CREATE FUNCTION reconciler_bump_generation(project uuid) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    UPDATE projects SET generation = generation + 1 WHERE id = project;
$$;

COMMENT ON FUNCTION reconciler_bump_generation(uuid) IS
    'Marks a project''s worker for reload. Called by triggers; the reconciler reacts through NOTIFY reconciler_projects.';

CREATE FUNCTION reconciler_check_worker_options(opts jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
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

CREATE FUNCTION reconciler_projects_before_write() RETURNS trigger
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

CREATE TRIGGER projects_before_write
    BEFORE INSERT OR UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION reconciler_projects_before_write();

CREATE FUNCTION reconciler_projects_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
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

CREATE TRIGGER projects_notify
    AFTER INSERT OR UPDATE OR DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION reconciler_projects_notify();

-- workflows: the served set changes when an active workflow appears, disappears,
-- is renamed (the name is the Temporal workflow type) or changes status.
CREATE FUNCTION reconciler_workflows_after_write() RETURNS trigger
LANGUAGE plpgsql AS $$
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

CREATE TRIGGER workflows_after_write
    AFTER INSERT OR UPDATE OR DELETE ON workflows
    FOR EACH ROW EXECUTE FUNCTION reconciler_workflows_after_write();

CREATE TRIGGER workflows_set_updated_at
    BEFORE UPDATE ON workflows
    FOR EACH ROW EXECUTE FUNCTION reconciler_set_updated_at();

-- compiled_workflows: versions are assigned or checked, the code must be a JSON object
-- with the top-level shape of a definition, and rows are immutable once written, so that
-- a run pinned to a version always finds the code it started with.
CREATE FUNCTION reconciler_compiled_workflows_before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    latest integer;
    doc    jsonb;
BEGIN
    -- Serialise compiles of one workflow so that versions are assigned without races.
    PERFORM 1 FROM workflows WHERE id = NEW.workflow_id FOR NO KEY UPDATE;
    SELECT max(version) INTO latest FROM compiled_workflows WHERE workflow_id = NEW.workflow_id;
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

CREATE TRIGGER compiled_workflows_before_insert
    BEFORE INSERT ON compiled_workflows
    FOR EACH ROW EXECUTE FUNCTION reconciler_compiled_workflows_before_insert();

CREATE FUNCTION reconciler_compiled_workflows_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'compiled_workflows rows are immutable: insert a new version instead'
        USING ERRCODE = 'object_not_in_prerequisite_state';
END;
$$;

CREATE TRIGGER compiled_workflows_immutable
    BEFORE UPDATE ON compiled_workflows
    FOR EACH ROW EXECUTE FUNCTION reconciler_compiled_workflows_immutable();

CREATE FUNCTION reconciler_compiled_workflows_after_write() RETURNS trigger
LANGUAGE plpgsql AS $$
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

CREATE TRIGGER compiled_workflows_after_write
    AFTER INSERT OR DELETE ON compiled_workflows
    FOR EACH ROW EXECUTE FUNCTION reconciler_compiled_workflows_after_write();

-- components: any change to an active component (or to whether it is active) reloads.
CREATE FUNCTION reconciler_components_after_write() RETURNS trigger
LANGUAGE plpgsql AS $$
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

CREATE TRIGGER components_after_write
    AFTER INSERT OR UPDATE OR DELETE ON components
    FOR EACH ROW EXECUTE FUNCTION reconciler_components_after_write();

CREATE TRIGGER components_set_updated_at
    BEFORE UPDATE ON components
    FOR EACH ROW EXECUTE FUNCTION reconciler_set_updated_at();
