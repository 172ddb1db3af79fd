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

-- name: ListLiveWorkers :many
-- Rows that claim a live worker, for the start-up and periodic orphan check.
SELECT worker_id, coalesce(host, '')::text AS host, coalesce(process_id, '')::text AS process_id,
       coalesce(metadata->>'instance', '')::text AS instance,
       coalesce(last_heartbeat, started_at) AS seen_at
FROM workflow_workers
WHERE status IN ('starting', 'running', 'stopping');

-- name: CloseOrphanedWorkers :execrows
-- Closes rows whose process is gone: a row that was stopping is stopped, any other is
-- failed, with the reason in metadata.error. Never touches a row that moved on since.
UPDATE workflow_workers ww
SET status     = CASE WHEN ww.status = 'stopping' THEN 'stopped' ELSE 'failed' END,
    stopped_at = now(),
    metadata   = ww.metadata || jsonb_build_object('error', o.reason, 'orphaned', true)
FROM (SELECT unnest(@worker_ids::text[]) AS worker_id, unnest(@reasons::text[]) AS reason) o
WHERE ww.worker_id = o.worker_id
  AND ww.status IN ('starting', 'running', 'stopping');

-- name: PruneWorkers :execrows
-- Deletes stopped and failed rows older than the retention, keeping each project's
-- newest row (its current state).
DELETE FROM workflow_workers ww
WHERE ww.status IN ('stopped', 'failed')
  AND ww.stopped_at < now() - make_interval(secs => @retention_seconds::float8)
  AND ww.id <> coalesce((
      SELECT latest.id FROM workflow_workers latest
      WHERE latest.project_id = ww.project_id
      ORDER BY latest.started_at DESC, latest.id DESC
      LIMIT 1), '00000000-0000-0000-0000-000000000000'::uuid);
