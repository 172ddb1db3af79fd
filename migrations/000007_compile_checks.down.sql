DROP TRIGGER IF EXISTS compiled_workflows_notify ON compiled_workflows;
DROP FUNCTION IF EXISTS reconciler_private.compiled_workflows_notify();
DROP TABLE IF EXISTS compiled_workflow_checks;
