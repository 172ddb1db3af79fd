// Package reconciler runs one Temporal worker per project, as the database says.
//
// # Who is the authority
//
// PostgreSQL is the only source of desired state: projects.desired_status says whether
// a project's worker should run, projects.generation says which version of its
// definitions it should serve (triggers bump it on compile, workflow activation,
// component and worker_options changes). The service owns the actual state, the workers
// in its process, and reports it in workflow_workers. Nothing calls the service.
//
// # The loop
//
//	NOTIFY reconciler_projects ─┐
//	poll (jittered resync) ─────┼─> queue (project ids, deduplicated) ─> reconcile
//	listener (re)connect resync ┘        ^                                  │
//	worker failure ─────────────────────-┘ (with backoff)                    v
//	                                              observe -> plan -> act -> workflow_workers
//
// Every trigger only marks a project dirty; the reconcile re-reads the project, so a
// lost or duplicated notification changes nothing that the next trigger does not
// repair. The queue never runs two reconciles of one project at once and bounds how
// many run together (RECONCILER_CONCURRENCY). plan is a pure function of (desired,
// actual): start, stop, reload (swap the served definitions of the running worker
// without dropping its pollers) or restart (new task queue, new worker options, or a
// failed worker: the new worker starts before the old one stops).
//
// # Worker rows
//
//	starting ──> running ──> stopping ──> stopped
//	    └──────────┴──> failed (metadata->>'error')
//
// Rows are written behind the reconcile by one writer that sends every pending row in
// one statement and retries until the database takes it; heartbeats are one UPDATE per
// interval for all workers of the process.
//
// # Definitions and pinning
//
// A worker registers one dynamic workflow and one dynamic activity. A run resolves its
// workflow type against the served set when it starts and records the compiled
// definition in its history (a SideEffect), so it keeps that version through reloads,
// restarts and redeploys. Changing the interpreter's behaviour for existing histories
// needs workflow.GetVersion and a new replay test (reconciler/flow/testdata).
package reconciler
