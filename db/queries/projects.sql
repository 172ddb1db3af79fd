-- name: ListProjectStates :many
-- The resync: every project's desired status and generation, nothing else. Callers
-- compare with what they run and mark the differences dirty.
SELECT id, desired_status, generation
FROM projects;

-- name: LoadProject :one
-- The one read of a reconcile: what the builder app wants for a project and, when it
-- should run at a generation other than @served_generation (the one its worker serves
-- here, -1 without a worker), everything a worker serves, from the same snapshot. Each
-- active workflow appears once, at its highest compiled version (compiled_id NULL when
-- it has none). definitions is false when workflows and components were not read.
SELECT p.id,
       p.desired_status,
       p.generation,
       p.task_queue_name,
       p.worker_options,
       p.restart_generation,
       (p.desired_status = 'running' AND p.generation <> @served_generation::bigint)::bool AS definitions,
       CASE WHEN p.desired_status = 'running' AND p.generation <> @served_generation::bigint THEN coalesce((
           SELECT jsonb_agg(jsonb_build_object(
                      'name', w.name,
                      'compiled_id', c.id,
                      'version', c.version,
                      'language', c.language,
                      'code', c.workflow_code) ORDER BY w.name)
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
       CASE WHEN p.desired_status = 'running' AND p.generation <> @served_generation::bigint THEN coalesce((
           SELECT jsonb_agg(jsonb_build_object(
                      'name', co.name,
                      'language', co.implementation_language,
                      'code', co.implementation_code) ORDER BY co.name)
           FROM components co
           WHERE co.project_id = p.id AND co.is_active
       ), '[]'::jsonb) ELSE '[]'::jsonb END::jsonb AS components
FROM projects p
WHERE p.id = @id;
