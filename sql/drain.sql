-- Drain: stop every running project (for maintenance of Temporal or the service).
-- Keep the printed list: start those projects again with
--   UPDATE projects SET desired_status = 'running' WHERE id IN (...);
--   psql "$DATABASE_URL" -f sql/drain.sql
\set ON_ERROR_STOP on
UPDATE projects SET desired_status = 'stopped'
WHERE desired_status = 'running'
RETURNING name AS drained, id AS project_id;
