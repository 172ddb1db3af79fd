-- Back to JSON-only compiled versions and JavaScript-only components. The older
-- schema cannot hold TypeScript or JavaScript workflow versions or TypeScript
-- components: they are deleted (their workflows fall back to their newest JSON
-- version).

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

DELETE FROM compiled_workflows WHERE language <> 'json';
ALTER TABLE compiled_workflows DROP CONSTRAINT compiled_workflows_language_check;
ALTER TABLE compiled_workflows DROP COLUMN language;
COMMENT ON COLUMN compiled_workflows.workflow_code IS
    'The compiled definition: a JSON document in the format of SPEC section 4, at most 1 MiB.';

DELETE FROM components WHERE implementation_language = 'typescript';
ALTER TABLE components DROP CONSTRAINT components_implementation_language_check;
ALTER TABLE components ADD CONSTRAINT components_implementation_language_check
    CHECK (implementation_language IN ('javascript'));
COMMENT ON COLUMN components.implementation_language IS NULL;
