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

-- name: AcquireLease :one
-- Takes a project's lease when it is free, already ours (then the term stays), or
-- expired — unless its owner is a replica that does not fence (it was alone) and may
-- still run: then only once that replica is presumed dead (@dead_replicas, or no
-- heartbeat for @stale_after_seconds). On a change of owner the term grows and the live
-- rows of the previous owner's workers are closed. acquired is false when the lease
-- cannot be taken; expires_at then says when it runs out.
WITH attempt AS (
    INSERT INTO project_leases AS l (project_id, owner, term, expires_at, acquired_at)
    VALUES (@project_id::uuid, @replica::text, 1, now() + make_interval(secs => @ttl_seconds::float8), now())
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
    RETURNING l.owner, l.term, l.expires_at
), closed AS (
    UPDATE workflow_workers w
    SET status     = CASE WHEN w.status = 'stopping' THEN 'stopped' ELSE 'failed' END,
        stopped_at = now(),
        metadata   = w.metadata || jsonb_build_object('error', 'lease taken over by ' || @replica::text)
    WHERE w.project_id = @project_id::uuid
      AND w.status IN ('starting', 'running', 'stopping')
      AND w.replica_id IS DISTINCT FROM @replica::text
      AND EXISTS (SELECT 1 FROM attempt)
)
SELECT true AS acquired, coalesce(owner, '')::text AS owner, term, expires_at FROM attempt
UNION ALL
SELECT false, coalesce(owner, '')::text, term, expires_at
FROM project_leases
WHERE project_id = @project_id::uuid AND NOT EXISTS (SELECT 1 FROM attempt);

-- name: ReleaseLease :execrows
-- Gives a project's lease up (under its term) and tells the other replicas at once. The
-- stopped worker's row (worker_id, may be empty) is closed in the same statement, so a
-- successor never finds it live.
WITH released AS (
    UPDATE project_leases
    SET owner = NULL, expires_at = now()
    WHERE project_id = @project_id::uuid AND owner = @replica::text AND term = @term::bigint
    RETURNING project_id
), closed AS (
    UPDATE workflow_workers
    SET status = 'stopped', stopped_at = coalesce(stopped_at, now()), last_heartbeat = last_heartbeat
    WHERE worker_id = @worker_id::text
      AND status IN ('starting', 'running', 'stopping')
      AND EXISTS (SELECT 1 FROM released)
)
SELECT pg_notify('reconciler_projects', project_id::text) FROM released;

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
