-- Compile feedback: every compiled version gets its validation result, whether or not
-- its project runs, within milliseconds of the compile's commit. The trigger below
-- notifies the compiled id; any replica checks it (with the code the worker runs) and
-- writes the result here. The builder app reads it under RLS (the project's owner).

CREATE TABLE compiled_workflow_checks (
    compiled_workflow_id uuid        PRIMARY KEY REFERENCES compiled_workflows (id) ON DELETE CASCADE,
    valid                boolean     NOT NULL,
    problems             jsonb       NOT NULL DEFAULT '[]',
    checked_at           timestamptz NOT NULL DEFAULT now(),
    checked_by           text        NOT NULL,
    CONSTRAINT compiled_workflow_checks_problems_check CHECK (jsonb_typeof(problems) = 'array')
);

COMMENT ON TABLE compiled_workflow_checks IS
    'The validation result of each compiled version, written by the reconciler within milliseconds of the compile (whether or not the project runs). A version that is not valid is not served: its workflow keeps serving its last valid version.';
COMMENT ON COLUMN compiled_workflow_checks.valid IS
    'Whether the version validates: node types and fields, references between nodes, activities (built in or active components) and child workflows (active workflows of the project) as they were when it was checked, expression syntax.';
COMMENT ON COLUMN compiled_workflow_checks.problems IS
    'Every problem found: [{"node": "<node id or null>", "field": "<field or null>", "message": "...", "line": n, "column": n}]; node and field for JSON definitions, line and column for TypeScript/JavaScript modules. Empty when valid.';
COMMENT ON COLUMN compiled_workflow_checks.checked_by IS 'The replica that checked the version.';

ALTER TABLE compiled_workflow_checks ENABLE ROW LEVEL SECURITY;
CREATE POLICY compiled_workflow_checks_owner ON compiled_workflow_checks FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM compiled_workflows c
                   JOIN workflows w ON w.id = c.workflow_id
                   JOIN projects p ON p.id = w.project_id
                   WHERE c.id = compiled_workflow_checks.compiled_workflow_id AND p.owner_id = (SELECT auth.uid())));
CREATE POLICY compiled_workflow_checks_service ON compiled_workflow_checks FOR ALL TO reconciler_service
    USING (true) WITH CHECK (true);
REVOKE ALL ON compiled_workflow_checks FROM anon, authenticated;
GRANT SELECT ON compiled_workflow_checks TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON compiled_workflow_checks TO reconciler_service;
GRANT ALL ON compiled_workflow_checks TO service_role;

CREATE FUNCTION reconciler_private.compiled_workflows_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    PERFORM pg_notify('reconciler_projects', 'compiled:' || NEW.id::text);
    RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION reconciler_private.compiled_workflows_notify() FROM PUBLIC;

CREATE TRIGGER compiled_workflows_notify
    AFTER INSERT ON compiled_workflows
    FOR EACH ROW EXECUTE FUNCTION reconciler_private.compiled_workflows_notify();
