-- Stop one project's worker (desired_status = 'stopped') and show its health row.
--   psql "$DATABASE_URL" -v project=<project uuid> -f sql/stop_project.sql
\set ON_ERROR_STOP on
\if :{?project}
\else
\echo 'usage: psql "$DATABASE_URL" -v project=<project uuid> -f sql/stop_project.sql'
\quit
\endif
SELECT project_name AS project, project_id, desired_status AS desired, actual_status AS actual, worker_id
FROM stop_project_worker(:'project');
