ALTER TABLE reconciler_replicas DROP COLUMN IF EXISTS problem;
