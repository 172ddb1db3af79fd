// Package reconciler runs one Temporal worker per project, as the database says.
//
// # Who is the authority
//
// PostgreSQL is the only source of desired state: projects.desired_status says whether
// a project's worker should run, projects.generation which version of its definitions
// it should serve (triggers bump it on compile, workflow activation, component and
// worker_options changes and restart requests). The service owns the actual state —
// the workers in its process — and reports it in workflow_workers. Nothing calls the
// service; an ops listener (ops.go) only serves /metrics, /healthz, /readyz and a
// read-only fleet page (fleet.go: project_worker_health as HTML, reloading itself).
//
// # The parts, each with its own Start and Stop
//
//	listener.go   NOTIFY reconciler_projects ─┐
//	resync.go     resync (interval, reconnect) ┤
//	lease/        ownership changed ───────────┼─> queue.go (project ids, deduplicated)
//	workers.go    worker failed (backoff) ─────┤          │
//	heartbeat.go  Temporal answers again ──────┘          v
//	                                    reconcile.go: observe -> plan -> act
//	                                                          │       │
//	                                    plan.go (pure) <──────┘       v
//	                                    workers.go: start / reload / stop / fail / fence
//	                                        └─> worker.go (one Temporal worker), rows.go
//
// Every trigger only marks a project dirty; the reconcile re-reads the project (one
// statement), so a lost or duplicated notification changes nothing that the next
// trigger does not repair. The queue never runs two reconciles of one project at once
// and bounds how many run together. plan is a pure function of what the database
// wants, what runs here, the lease and the project's failure history; it returns the
// whole step (start, stop, reload — swap the served definitions without dropping the
// pollers —, restart — the new worker polls before the old one stops —, acquire or
// release the lease, and when to look again), and the driver in reconcile.go applies
// it, owns every requeue and recovers a panicking pass. A worker that fails is taken
// out and started again after its project's backoff; a new generation is tried at
// once.
//
// Beside them, search.go learns which of the service's search attributes the
// namespace has (see Definitions and pinning) and backlog.go samples each running
// project's task-queue backlog from Temporal at a bounded request rate, for the
// metrics an autoscaler reads.
//
// # Replicas and leases
//
// See package lease: replicas register and renew their leases in one statement per
// interval; projects are assigned by rendezvous hashing with bounded loads; a project
// runs only on the replica holding its lease, whose term fences every write to
// workflow_workers. A replica that cannot renew stops its workers before its leases can
// expire (unless it has been alone); SIGTERM releases each lease as soon as its worker
// has stopped.
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
// A worker registers one dynamic workflow and one dynamic activity (served.go holds
// what it serves). A run resolves its workflow type against the served set when it
// starts and records the compiled definition in its history (a SideEffect), so it
// keeps that version through reloads, restarts and redeploys; a run the interpreter
// continued as new keeps it too (its second argument names it, read only when Temporal
// says the run was continued; a CompiledLoader loads a version no longer served, in a
// local activity). A version whose language is typescript or javascript is compiled
// by package script (esbuild, cached by compiled id) and each of its runs gets a
// QuickJS VM (scripted.go). The same SideEffect records whether the namespace has the
// search attributes ReconcilerProjectId and ReconcilerCompiledVersion (search.go
// learns it in the background); if so the run upserts them next, so a namespace
// without them never fails a workflow task. Changing the
// interpreter's behaviour for existing histories needs workflow.GetVersion and new
// replay histories (TestRecordHistories).
//
// # Components
//
// Tenant JavaScript never runs in this process. Every project's worker calls its
// components through one component.Pool (a part like the others, stopped after the
// workers): sandbox processes, the service's binary re-executed, that the pool kills
// when a call overruns its time or memory and hands out in turns between projects, at
// most all but one to a project. A sandbox that dies fails one activity, not the
// service (see package component).
package reconciler
