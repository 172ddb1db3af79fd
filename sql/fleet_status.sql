-- Fleet status: every project, desired vs actual, health, generations, worker, last error.
-- Unhealthy projects first.
--   psql "$DATABASE_URL" -f sql/fleet_status.sql
\set ON_ERROR_STOP on
\set QUIET on
\pset null '-'
SELECT project_name                     AS project,
       project_id,
       desired_status                   AS desired,
       actual_status                    AS actual,
       is_healthy                       AS healthy,
       generation_desired               AS gen_desired,
       generation_observed              AS gen_served,
       host,
       owner_replica                    AS replica,
       date_trunc('second', now() - last_heartbeat) AS heartbeat_age,
       restarts,
       left(last_error, 100)            AS last_error
FROM project_worker_health
ORDER BY is_healthy, project_name, project_id;
