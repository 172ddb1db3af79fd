CREATE OR REPLACE VIEW project_worker_health WITH (security_invoker = true) AS
SELECT p.id                                   AS project_id,
       p.name                                 AS project_name,
       p.owner_id,
       p.task_queue_name,
       p.desired_status,
       coalesce(w.status, 'stopped')          AS actual_status,
       CASE WHEN p.desired_status = 'running' THEN
                w.status = 'running'
                AND w.last_heartbeat > now() - 2 * make_interval(secs => coalesce((w.metadata->>'heartbeat_interval_seconds')::float8, 10))
                AND w.metadata->>'poll_error' IS NULL
            ELSE coalesce(w.status, 'stopped') IN ('stopped', 'failed')
       END                                    AS is_healthy,
       w.worker_id,
       w.host,
       w.process_id,
       p.generation                           AS generation_desired,
       w.generation                           AS generation_observed,
       w.last_heartbeat,
       coalesce(w.metadata->>'error', w.metadata->>'poll_error', w.metadata->>'last_error') AS last_error,
       coalesce((w.metadata->>'restarts')::int, 0) AS restarts,
       (w.metadata->>'next_retry_at')::timestamptz AS next_retry_at,
       w.metadata->>'replica'                 AS owner_replica,
       w.metadata->'workflow_errors'          AS workflow_errors,
       w.started_at,
       w.stopped_at
FROM projects p
LEFT JOIN LATERAL (
    SELECT ww.status, ww.worker_id, ww.host, ww.process_id, ww.generation, ww.last_heartbeat,
           ww.metadata, ww.started_at, ww.stopped_at
    FROM workflow_workers ww
    WHERE ww.project_id = p.id
    ORDER BY ww.started_at DESC, ww.id DESC
    LIMIT 1
) w ON true;

ALTER TABLE workflow_workers DROP COLUMN IF EXISTS lease_term, DROP COLUMN IF EXISTS replica_id;
DROP TABLE IF EXISTS project_leases;
DROP TABLE IF EXISTS reconciler_replicas;
