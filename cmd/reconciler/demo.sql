-- The demo project of `reconciler dev`: one workflow that greets by name. Idempotent.
INSERT INTO projects (name, task_queue_name)
VALUES ('Demo', 'demo-greeting-queue')
ON CONFLICT (task_queue_name) DO NOTHING;

INSERT INTO workflows (project_id, name, status)
SELECT id, 'greet', 'active' FROM projects WHERE task_queue_name = 'demo-greeting-queue'
ON CONFLICT (project_id, name) DO NOTHING;

INSERT INTO compiled_workflows (workflow_id, workflow_code)
SELECT w.id, $json$
{
  "version": 1,
  "start": "greet",
  "nodes": {
    "greet": {"type": "activity", "activity": "echo",
              "input": {"message": "Hello, ${input.name}!"}, "next": "log"},
    "log":   {"type": "activity", "activity": "log",
              "input": "${nodes.greet.output.message}", "next": "done"},
    "done":  {"type": "return", "value": "${nodes.greet.output.message}"}
  }
}
$json$
FROM workflows w JOIN projects p ON p.id = w.project_id
WHERE p.task_queue_name = 'demo-greeting-queue' AND w.name = 'greet'
  AND NOT EXISTS (SELECT 1 FROM compiled_workflows c WHERE c.workflow_id = w.id);

UPDATE projects SET desired_status = 'running'
WHERE task_queue_name = 'demo-greeting-queue' AND desired_status <> 'running';
