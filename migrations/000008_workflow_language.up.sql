-- TypeScript and JavaScript workflow code (SPEC 4b): compiled_workflows.language says
-- how workflow_code is run, and components may be written in TypeScript. The JSON
-- shape check of compiles applies to JSON definitions only; the size limit to all.

ALTER TABLE compiled_workflows ADD COLUMN language text NOT NULL DEFAULT 'json';
ALTER TABLE compiled_workflows ADD CONSTRAINT compiled_workflows_language_check
    CHECK (language IN ('json', 'typescript', 'javascript'));

COMMENT ON COLUMN compiled_workflows.language IS
    'How workflow_code is run: json (a definition, SPEC section 4; the default), or typescript / javascript (an ES module written against @temporalio/workflow, SPEC section 4b, bundled and run by the worker with no Node.js). A module that does not compile is not served; the reason, with line and column, is in workflow_workers.metadata->''workflow_errors''.';
COMMENT ON COLUMN compiled_workflows.workflow_code IS
    'The compiled definition, at most 1 MiB: a JSON document in the format of SPEC section 4 when language = json (its shape is checked on insert), else the source of a TypeScript or JavaScript module whose default export (or only exported function) is the workflow.';

ALTER TABLE components DROP CONSTRAINT components_implementation_language_check;
ALTER TABLE components ADD CONSTRAINT components_implementation_language_check
    CHECK (implementation_language IN ('javascript', 'typescript'));
COMMENT ON COLUMN components.implementation_language IS
    'javascript, or typescript (types are erased with esbuild before the code runs; the function keeps its name).';

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

    IF NEW.language <> 'json' THEN
        -- A TypeScript or JavaScript module: the worker compiles it (esbuild) and
        -- reports what is wrong in workflow_workers.metadata->'workflow_errors'.
        RETURN NEW;
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
