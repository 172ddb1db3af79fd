-- Unhealthy or crash-looping workers: projects whose state differs from what is
-- desired, or whose worker failed in the last hour, with the failures counted.
--   psql "$DATABASE_URL" -f sql/unhealthy.sql
\set ON_ERROR_STOP on
\set QUIET on
\pset null '-'
SELECT h.project_name                   AS project,
       h.project_id,
       h.desired_status                 AS desired,
       h.actual_status                  AS actual,
       f.failures_last_hour,
       h.restarts,
       h.next_retry_at,
       date_trunc('second', now() - h.last_heartbeat) AS heartbeat_age,
       left(h.last_error, 160)          AS last_error
FROM project_worker_health h
CROSS JOIN LATERAL (
    SELECT count(*) AS failures_last_hour
    FROM workflow_workers ww
    WHERE ww.project_id = h.project_id
      AND ww.status = 'failed'
      AND ww.stopped_at > now() - interval '1 hour'
) f
WHERE NOT h.is_healthy OR f.failures_last_hour > 0
ORDER BY f.failures_last_hour DESC, h.project_name;
