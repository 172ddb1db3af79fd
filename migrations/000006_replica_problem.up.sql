-- What a replica wants its operator to know about itself (for example that
-- notifications do not reach its listener), for `reconciler status` and psql.
ALTER TABLE reconciler_replicas ADD COLUMN problem text NULL;
COMMENT ON COLUMN reconciler_replicas.problem IS
    'A problem the replica cannot fix by itself and how to fix it (e.g. notifications not delivered through a transaction-mode pooler); NULL when all is well. Written with every lease renewal.';
