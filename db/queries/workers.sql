-- name: UpsertWorkers :exec
-- Writes the latest known state of several workers in one statement. Each element is
-- a whole row, so re-applying it after a failed write is harmless. project_id is only
-- set on insert: a project deleted since then leaves it NULL (ON DELETE SET NULL).
WITH u AS (
    SELECT unnest(@worker_ids::text[])            AS worker_id,
           unnest(@project_ids::uuid[])           AS project_id,
           unnest(@task_queue_names::text[])      AS task_queue_name,
           unnest(@statuses::text[])              AS status,
           unnest(@hosts::text[])                 AS host,
           unnest(@process_ids::text[])           AS process_id,
           unnest(@started_ats::timestamptz[])    AS started_at,
           -- Go's zero time stands for NULL: sqlc arrays cannot hold NULL elements.
           nullif(unnest(@stopped_ats::timestamptz[]), '0001-01-01 00:00:00+00') AS stopped_at,
           unnest(@generations::bigint[])         AS generation,
           unnest(@metadatas::jsonb[])            AS metadata
)
INSERT INTO workflow_workers AS ww (
    worker_id, project_id, task_queue_name, status, host, process_id,
    started_at, stopped_at, last_heartbeat, generation, metadata)
SELECT u.worker_id, p.id, u.task_queue_name, u.status, u.host, u.process_id,
       u.started_at, u.stopped_at,
       CASE WHEN u.status IN ('starting', 'running') THEN now() END,
       u.generation, u.metadata
FROM u
LEFT JOIN projects p ON p.id = u.project_id
ON CONFLICT (worker_id) DO UPDATE
SET status         = excluded.status,
    stopped_at     = excluded.stopped_at,
    last_heartbeat = coalesce(excluded.last_heartbeat, ww.last_heartbeat),
    generation     = excluded.generation,
    metadata       = excluded.metadata;

-- name: HeartbeatWorkers :execrows
-- One statement per interval for all of this process's live workers.
UPDATE workflow_workers
SET last_heartbeat = now()
WHERE worker_id = ANY(@worker_ids::text[])
  AND status IN ('starting', 'running');

-- name: GetLatestWorker :one
SELECT id, worker_id, project_id, task_queue_name, status, host, process_id,
       started_at, stopped_at, last_heartbeat, generation, metadata
FROM workflow_workers
WHERE project_id = @project_id
ORDER BY started_at DESC, id DESC
LIMIT 1;
