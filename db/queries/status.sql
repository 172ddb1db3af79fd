-- name: ProjectHealth :many
-- Every project's health row, the unhealthy first, for `reconciler status`. Casts make
-- the view's nullable columns plain values for the generated code.
SELECT project_id,
       project_name,
       task_queue_name,
       desired_status,
       actual_status::text                          AS actual_status,
       coalesce(is_healthy, false)::bool            AS is_healthy,
       coalesce(worker_id, '')::text                AS worker_id,
       coalesce(host, '')::text                     AS host,
       coalesce(process_id, '')::text               AS process_id,
       generation_desired,
       coalesce(generation_observed, 0)::bigint     AS generation_observed,
       last_heartbeat,
       coalesce(last_error, '')::text               AS last_error,
       restarts::int                                AS restarts,
       coalesce(to_char(next_retry_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '')::text AS next_retry_at,
       coalesce(owner_replica, '')::text            AS owner_replica
FROM project_worker_health
ORDER BY is_healthy, project_name, project_id;

-- name: ReplicaProblems :many
-- Live replicas that report a problem they cannot fix by themselves.
SELECT replica_id, host, problem::text AS problem
FROM reconciler_replicas
WHERE problem IS NOT NULL AND heartbeat_at > now() - interval '1 minute'
ORDER BY replica_id;
