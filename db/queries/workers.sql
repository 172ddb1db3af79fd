-- name: UpsertWorkers :exec
-- Writes the latest known state of several workers of one replica in one statement.
-- Each element is a whole row, so re-applying it after a failed write is harmless.
-- Fencing: a row is written only while its project's lease still has the worker's term
-- and is held by this replica — or, for a closing write (stopping, stopped, failed),
-- was released by it since (the term stays until someone else takes the lease) or
-- went with its deleted project. A late write of a replica whose lease was taken over
-- never lands. project_id is set on insert only: a project deleted since then leaves
-- it NULL (ON DELETE SET NULL).
WITH u AS (
    SELECT unnest(@worker_ids::text[])            AS worker_id,
           unnest(@project_ids::uuid[])           AS project_id,
           unnest(@task_queue_names::text[])      AS task_queue_name,
           unnest(@statuses::text[])              AS status,
           unnest(@started_ats::timestamptz[])    AS started_at,
           -- Go's zero time stands for NULL: sqlc arrays cannot hold NULL elements.
           nullif(unnest(@stopped_ats::timestamptz[]), '0001-01-01 00:00:00+00') AS stopped_at,
           unnest(@generations::bigint[])         AS generation,
           unnest(@lease_terms::bigint[])         AS lease_term,
           unnest(@metadatas::jsonb[])            AS metadata
), allowed AS (
    SELECT u.* FROM u
    LEFT JOIN project_leases l ON l.project_id = u.project_id
    WHERE (l.term = u.lease_term AND l.owner = @replica::text)
       OR (u.status IN ('stopping', 'stopped', 'failed')
           AND (l.project_id IS NULL OR (l.term = u.lease_term AND l.owner IS NULL)))
)
INSERT INTO workflow_workers AS ww (
    worker_id, project_id, task_queue_name, status, host, process_id, replica_id, lease_term,
    started_at, stopped_at, last_heartbeat, generation, metadata)
SELECT a.worker_id, p.id, a.task_queue_name, a.status, @host::text, @process_id::text, @replica::text, a.lease_term,
       a.started_at, a.stopped_at,
       CASE WHEN a.status IN ('starting', 'running') THEN now() END,
       a.generation, a.metadata
FROM allowed a
LEFT JOIN projects p ON p.id = a.project_id
ON CONFLICT (worker_id) DO UPDATE
SET status         = excluded.status,
    stopped_at     = excluded.stopped_at,
    last_heartbeat = coalesce(excluded.last_heartbeat, ww.last_heartbeat),
    generation     = excluded.generation,
    metadata       = excluded.metadata;

-- name: HeartbeatWorkers :execrows
-- One statement per interval for all of this replica's live workers, each only while
-- the replica still holds its project's lease under the worker's term.
UPDATE workflow_workers w
SET last_heartbeat = now()
FROM project_leases l
WHERE w.worker_id = ANY(@worker_ids::text[])
  AND w.status IN ('starting', 'running')
  AND l.project_id = w.project_id
  AND l.owner = @replica::text
  AND l.term = w.lease_term;

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

-- name: PingListener :exec
-- The listener's proof that its connection delivers: a notification to itself.
SELECT pg_notify('reconciler_projects', 'ping:' || @instance::text);
