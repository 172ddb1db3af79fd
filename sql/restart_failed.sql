-- Restart every project that should run but whose newest worker failed (each gets a
-- new worker now instead of waiting for its backoff). Prints what was restarted.
--   psql "$DATABASE_URL" -f sql/restart_failed.sql
\set ON_ERROR_STOP on
BEGIN;
SELECT r.project_name AS restarted, r.project_id, r.generation_desired AS generation
FROM project_worker_health h,
     LATERAL restart_project_worker(h.project_id) r
WHERE h.desired_status = 'running'
  AND h.actual_status = 'failed'
ORDER BY r.project_name;
COMMIT;
