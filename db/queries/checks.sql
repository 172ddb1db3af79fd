-- name: LoadCompiledForCheck :one
-- A compiled version to check, with what its validation depends on: the names of the
-- project's active components and active workflows.
SELECT c.id,
       c.version,
       c.workflow_code,
       c.language,
       c.created_at,
       w.name                                    AS workflow_name,
       w.project_id,
       coalesce((SELECT array_agg(co.name ORDER BY co.name) FROM components co
                 WHERE co.project_id = w.project_id AND co.is_active), '{}')::text[] AS components,
       coalesce((SELECT array_agg(o.name ORDER BY o.name) FROM workflows o
                 WHERE o.project_id = w.project_id AND o.status = 'active'), '{}')::text[] AS workflows
FROM compiled_workflows c
JOIN workflows w ON w.id = c.workflow_id
WHERE c.id = @id;

-- name: InsertCheck :exec
-- The first result written for a version wins (every replica may check it).
INSERT INTO compiled_workflow_checks (compiled_workflow_id, valid, problems, checked_by)
VALUES (@compiled_workflow_id, @valid, @problems, @checked_by)
ON CONFLICT (compiled_workflow_id) DO NOTHING;

-- name: UncheckedCompiled :many
-- Compiled versions without a result yet (compiled while no replica listened), oldest
-- first.
SELECT c.id
FROM compiled_workflows c
WHERE NOT EXISTS (SELECT 1 FROM compiled_workflow_checks k WHERE k.compiled_workflow_id = c.id)
ORDER BY c.created_at
LIMIT @max_rows;
