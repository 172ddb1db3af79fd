-- Several replicas on one database. Each replica registers itself and renews its
-- leases in one statement per interval; a project's worker runs only on the replica
-- holding its live lease. term is a fencing token: it grows on every change of owner,
-- and workflow_workers rows are written only under the term they were started with.

CREATE TABLE reconciler_replicas (
    replica_id   text        PRIMARY KEY,
    host         text        NOT NULL,
    process_id   text        NOT NULL,
    capacity     integer     NOT NULL,
    draining     boolean     NOT NULL DEFAULT false,
    fences       boolean     NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reconciler_replicas_capacity_check CHECK (capacity >= 0)
);

COMMENT ON TABLE reconciler_replicas IS
    'Reconciler processes sharing this database. A replica whose heartbeat is fresh and that is not draining takes part in the assignment of projects.';
COMMENT ON COLUMN reconciler_replicas.fences IS
    'The replica knows it is not alone, so it stops its workers when it cannot renew its leases in time; the leases of a replica that does not fence are taken over only once it is presumed dead.';

CREATE TABLE project_leases (
    project_id  uuid        PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    owner       text        NULL,
    term        bigint      NOT NULL DEFAULT 1,
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX project_leases_owner_idx ON project_leases (owner) WHERE owner IS NOT NULL;

COMMENT ON TABLE project_leases IS
    'Which replica may run a project''s worker: owner, until expires_at. term grows on every change of owner (fencing).';
COMMENT ON COLUMN project_leases.owner IS 'reconciler_replicas.replica_id of the holder; NULL when released.';

ALTER TABLE workflow_workers
    ADD COLUMN replica_id text NULL,
    ADD COLUMN lease_term bigint NULL;
COMMENT ON COLUMN workflow_workers.replica_id IS 'The replica that runs (ran) this worker.';
COMMENT ON COLUMN workflow_workers.lease_term IS 'The project_leases.term the worker was started under; its replica''s writes are accepted only while the lease still has that term.';

ALTER TABLE reconciler_replicas ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_leases ENABLE ROW LEVEL SECURITY;
CREATE POLICY reconciler_replicas_service ON reconciler_replicas FOR ALL TO reconciler_service USING (true) WITH CHECK (true);
CREATE POLICY project_leases_service ON project_leases FOR ALL TO reconciler_service USING (true) WITH CHECK (true);
CREATE POLICY project_leases_owner ON project_leases FOR SELECT TO authenticated
    USING (EXISTS (SELECT 1 FROM projects p WHERE p.id = project_leases.project_id AND p.owner_id = (SELECT auth.uid())));
REVOKE ALL ON reconciler_replicas, project_leases FROM anon, authenticated;
GRANT SELECT ON project_leases TO authenticated; -- project_worker_health shows the owning replica
GRANT SELECT, INSERT, UPDATE, DELETE ON reconciler_replicas, project_leases TO reconciler_service;
GRANT ALL ON reconciler_replicas, project_leases TO service_role;

-- The health view names the owning replica from the lease when one is live.
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
       coalesce(l.owner, w.replica_id, w.metadata->>'replica') AS owner_replica,
       w.metadata->'workflow_errors'          AS workflow_errors,
       w.started_at,
       w.stopped_at
FROM projects p
LEFT JOIN LATERAL (
    SELECT ww.status, ww.worker_id, ww.host, ww.process_id, ww.generation, ww.last_heartbeat,
           ww.metadata, ww.started_at, ww.stopped_at, ww.replica_id
    FROM workflow_workers ww
    WHERE ww.project_id = p.id
    ORDER BY ww.started_at DESC, ww.id DESC
    LIMIT 1
) w ON true
LEFT JOIN project_leases l ON l.project_id = p.id AND l.owner IS NOT NULL AND l.expires_at > now();
