// Package reconciler runs one Temporal worker per project, as the database says.
//
// # Who is the authority
//
// PostgreSQL is the only source of desired state: projects.desired_status says whether
// a project's worker should run, projects.generation which version of its definitions
// it should serve (triggers bump it on compile, workflow activation, component and
// worker_options changes and restart requests). The service owns the actual state —
// the workers in its process — and reports it in workflow_workers. Nothing calls the
// service; an ops listener only serves /metrics, /healthz and /readyz.
//
// # The loop
//
//	NOTIFY reconciler_projects ──┐
//	poll (jittered resync) ──────┤
//	listener (re)connect resync ─┼─> queue (project ids, deduplicated) ─> reconcile
//	lease renewal, reassignment ─┤        ^                                  │
//	worker failure (backoff) ────┘        └── retry with backoff <───────────┤
//	                                                                         v
//	          observe -> ownership (assignment + lease) -> plan -> act -> workflow_workers
//
// Every trigger only marks a project dirty; the reconcile re-reads the project, so a
// lost or duplicated notification changes nothing that the next trigger does not
// repair. The queue never runs two reconciles of one project at once and bounds how
// many run together. plan is a pure function of (desired, actual): start, stop, reload
// (swap the served definitions of the running worker without dropping its pollers) or
// restart (new task queue or options, or a restart request: the new worker starts
// before the old one stops). A worker that fails is dropped and started again after
// its project's backoff.
//
// # Replicas and leases
//
// Every replica registers in reconciler_replicas and, in one statement per renew
// interval, extends its leases in project_leases. Projects are assigned by rendezvous
// hashing with bounded loads over the live replicas; a project runs only on the replica
// holding its lease. The lease's term grows with every change of owner and fences every
// write to workflow_workers. A replica that cannot renew stops its workers before its
// leases can expire (unless it has been alone, when no one could take over); SIGTERM
// releases each lease as soon as its worker has stopped.
//
// # Worker rows
//
//	starting ──> running ──> stopping ──> stopped
//	    └──────────┴──> failed (metadata->>'error', restarts, next_retry_at)
//
// Rows are written behind the reconciles by one writer that sends every pending row in
// one statement and retries until the database takes them; heartbeats are one UPDATE
// per interval for all workers of the replica. A gRPC interceptor watches every poll:
// polls failing for longer than a threshold show as metadata.poll_error, or make the
// worker failed when retrying cannot help. Rows left live by processes that are gone
// are closed by the next start or by any replica's janitor.
//
// # Definitions and pinning
//
// A worker registers one dynamic workflow and one dynamic activity. A run resolves its
// workflow type against the served set when it starts and records the compiled
// definition in its history (a SideEffect), so it keeps that version through reloads,
// restarts and redeploys. Changing the interpreter's behaviour for existing histories
// needs workflow.GetVersion and new replay histories (TestRecordHistories).
package reconciler
