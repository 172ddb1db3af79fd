-- name: ListProjectStates :many
-- The resync: every project's desired status and generation, nothing else. Callers
-- compare with what they run and mark the differences dirty.
SELECT id, desired_status, generation
FROM projects;

-- name: GetCompiledVersion :one
-- A compiled version of one workflow of a project, by id (for a run continued as new
-- that is pinned to a version its worker no longer serves). Rows are immutable.
SELECT c.version, c.workflow_code
FROM compiled_workflows c
JOIN workflows w ON w.id = c.workflow_id
WHERE c.id = @id AND w.project_id = @project_id AND w.name = @workflow_name;

-- name: LoadProjects :many
-- LoadProject for many projects in one statement (many reconciles at once): one row per
-- project that exists; served_generations[i] is what the worker of ids[i] serves here
-- (-1 without a worker).
SELECT p.id,
       p.desired_status,
       p.generation,
       p.task_queue_name,
       p.worker_options,
       p.restart_generation,
       (p.desired_status = 'running' AND p.generation <> s.served)::bool AS definitions,
       CASE WHEN p.desired_status = 'running' AND p.generation <> s.served THEN coalesce((
           SELECT jsonb_agg(jsonb_build_object(
                      'name', w.name,
                      'compiled_id', c.id,
                      'version', c.version,
                      'language', c.language,
                      'code', c.workflow_code,
                      'fallback', (SELECT jsonb_build_object('compiled_id', f.id, 'version', f.version, 'language', f.language, 'code', f.workflow_code)
                                   FROM compiled_workflows f
                                   JOIN compiled_workflow_checks k ON k.compiled_workflow_id = f.id AND k.valid
                                   WHERE f.workflow_id = w.id AND f.version < c.version
                                   ORDER BY f.version DESC
                                   LIMIT 1)) ORDER BY w.name)
           FROM workflows w
           LEFT JOIN LATERAL (
               SELECT cw.id, cw.version, cw.language, cw.workflow_code
               FROM compiled_workflows cw
               WHERE cw.workflow_id = w.id
               ORDER BY cw.version DESC
               LIMIT 1
           ) c ON true
           WHERE w.project_id = p.id AND w.status = 'active'
       ), '[]'::jsonb) ELSE '[]'::jsonb END::jsonb AS workflows,
       CASE WHEN p.desired_status = 'running' AND p.generation <> s.served THEN coalesce((
           SELECT jsonb_agg(jsonb_build_object(
                      'name', co.name,
                      'language', co.implementation_language,
                      'code', co.implementation_code) ORDER BY co.name)
           FROM components co
           WHERE co.project_id = p.id AND co.is_active
       ), '[]'::jsonb) ELSE '[]'::jsonb END::jsonb AS components
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@served_generations::bigint[]) AS served) s
JOIN projects p ON p.id = s.id;
