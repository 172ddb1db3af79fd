-- name: RenewLeases :many
-- The replica's one statement per renewal interval: register or refresh itself, extend
-- every lease it still holds, and read the live replicas. Rows of kind 'lease' are the
-- leases it holds (id = project id, n = term); rows of kind 'replica' are the other
-- live replicas (id = replica id, n = capacity). A lease missing from the answer was
-- lost to another replica. The replica fences when it saw others lately (@fences) or
-- sees one now: the row says so in the same snapshot the answer comes from.
WITH others AS (
    SELECT replica_id, capacity
    FROM reconciler_replicas
    WHERE replica_id <> @replica::text
      AND NOT draining
      AND heartbeat_at > now() - make_interval(secs => @replica_stale_seconds::float8)
), me AS (
    INSERT INTO reconciler_replicas AS r (replica_id, host, process_id, capacity, draining, fences, heartbeat_at, problem)
    VALUES (@replica::text, @host::text, @process_id::text, @capacity::int, @draining::bool,
            @fences::bool OR EXISTS (SELECT 1 FROM others), now(), nullif(@problem::text, ''))
    ON CONFLICT (replica_id) DO UPDATE
    SET heartbeat_at = now(), capacity = excluded.capacity, draining = excluded.draining, fences = excluded.fences,
        host = excluded.host, process_id = excluded.process_id, problem = excluded.problem
    RETURNING 1
), renewed AS (
    UPDATE project_leases l
    SET expires_at = now() + make_interval(secs => @ttl_seconds::float8)
    WHERE l.owner = @replica::text
    RETURNING l.project_id, l.term
)
SELECT 'lease'::text AS kind, project_id::text AS id, term AS n FROM renewed
UNION ALL
SELECT 'replica'::text, replica_id, capacity::bigint FROM others;

-- name: SetDraining :exec
-- A replica shutting down leaves the assignment at once and says so.
WITH d AS (
    UPDATE reconciler_replicas SET draining = true WHERE replica_id = @replica::text RETURNING 1
)
SELECT pg_notify('reconciler_projects', 'replicas:' || @replica::text) FROM d;

-- name: RemoveReplica :exec
DELETE FROM reconciler_replicas WHERE replica_id = @replica::text;

-- name: ListReplicas :many
-- Every registered replica, for the janitor (which tells dead ones on this host).
SELECT replica_id, host, process_id, heartbeat_at FROM reconciler_replicas;

-- name: DeleteStaleReplicas :execrows
-- Forgets replicas gone for long; their leases stay until taken over.
DELETE FROM reconciler_replicas
WHERE heartbeat_at < now() - make_interval(secs => @older_than_seconds::float8);

-- name: AnnounceReplica :exec
-- Tells the other replicas that this one joined: they renew (and reassign) at once.
SELECT pg_notify('reconciler_projects', 'replicas:' || @replica::text);

-- name: AcquireLeases :many
-- AcquireLease for many projects in one statement (a mass start): one row per project
-- that exists, acquired or not, with the same rules. A project missing from the answer
-- was deleted.
WITH wanted AS (
    SELECT DISTINCT w.project_id
    FROM unnest(@project_ids::uuid[]) AS w(project_id)
    JOIN projects p ON p.id = w.project_id
), attempt AS (
    INSERT INTO project_leases AS l (project_id, owner, term, expires_at, acquired_at)
    SELECT project_id, @replica::text, 1, now() + make_interval(secs => @ttl_seconds::float8), now()
    FROM wanted
    ON CONFLICT (project_id) DO UPDATE
    SET term        = CASE WHEN l.owner IS NOT DISTINCT FROM excluded.owner THEN l.term ELSE l.term + 1 END,
        acquired_at = CASE WHEN l.owner IS NOT DISTINCT FROM excluded.owner THEN l.acquired_at ELSE now() END,
        owner       = excluded.owner,
        expires_at  = excluded.expires_at
    WHERE l.owner IS NULL
       OR l.owner = excluded.owner
       OR (l.expires_at < now()
           AND (l.owner = ANY(@dead_replicas::text[])
                OR NOT EXISTS (SELECT 1 FROM reconciler_replicas r
                               WHERE r.replica_id = l.owner
                                 AND NOT r.fences
                                 AND r.heartbeat_at > now() - make_interval(secs => @stale_after_seconds::float8))))
    RETURNING l.project_id, l.owner, l.term, l.expires_at
), closed AS (
    UPDATE workflow_workers w
    SET status     = CASE WHEN w.status = 'stopping' THEN 'stopped' ELSE 'failed' END,
        stopped_at = now(),
        metadata   = w.metadata || jsonb_build_object('error', 'lease taken over by ' || @replica::text)
    WHERE w.project_id IN (SELECT project_id FROM attempt)
      AND w.status IN ('starting', 'running', 'stopping')
      AND w.replica_id IS DISTINCT FROM @replica::text
)
SELECT a.project_id, true AS acquired, coalesce(a.owner, '')::text AS owner, a.term, a.expires_at FROM attempt a
UNION ALL
SELECT l.project_id, false, coalesce(l.owner, '')::text, l.term, l.expires_at
FROM project_leases l
WHERE l.project_id IN (SELECT project_id FROM wanted)
  AND l.project_id NOT IN (SELECT project_id FROM attempt);

-- name: ReleaseLeases :execrows
-- ReleaseLease for many projects in one statement (a mass stop). Each release is
-- notified as released:<replica>:<project id>: the other replicas reconcile the project,
-- the releasing one knows already.
WITH r AS (
    SELECT unnest(@project_ids::uuid[]) AS project_id, unnest(@terms::bigint[]) AS term, unnest(@worker_ids::text[]) AS worker_id
), released AS (
    UPDATE project_leases l
    SET owner = NULL, expires_at = now()
    FROM r
    WHERE l.project_id = r.project_id AND l.owner = @replica::text AND l.term = r.term
    RETURNING l.project_id
), closed AS (
    UPDATE workflow_workers w
    SET status = 'stopped', stopped_at = coalesce(w.stopped_at, now()), last_heartbeat = w.last_heartbeat
    FROM r
    WHERE w.worker_id = r.worker_id
      AND r.worker_id <> ''
      AND w.status IN ('starting', 'running', 'stopping')
      AND r.project_id IN (SELECT project_id FROM released)
)
SELECT pg_notify('reconciler_projects', 'released:' || @replica::text || ':' || project_id::text) FROM released;
