package reconciler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler/egress"
)

// Reconciler runs one Temporal worker per project whose desired_status is running.
// See doc.go for the model.
type Reconciler struct {
	cfg      Config
	pool     *pgxpool.Pool
	q        *db.Queries
	shared   *shared
	log      *slog.Logger
	host     string
	pid      string
	instance string // tells this process from an earlier one with the same host and pid
	replica  string // this process's name among the replicas sharing the database

	queue    *queue
	failures *failures
	health   *pollHealth
	rows     *rowWriter
	own      *ownership

	renewWake chan struct{}
	dead      atomic.Pointer[[]string] // replicas of this host whose process is gone
	announced atomic.Bool              // the other replicas were told this one joined

	metrics  *metrics
	queues   *sync.Map // task queue -> project id, for the SDK's logs and metrics
	noticed  sync.Map  // project id -> when its notification arrived
	ticks    loopTicks
	stopping atomic.Bool
	ops      *http.Server
	opsAddr  atomic.Value
	opsDone  chan struct{}

	mu      sync.Mutex
	workers map[uuid.UUID]*projectWorker

	limits       workerLimits
	pollersMu    sync.Mutex                     // held while a start takes its share of the poller budget
	pendingPolls map[uuid.UUID]effectiveOptions // starts that took a share and are not in workers yet

	listenerUp        atomic.Bool
	lastPing          atomic.Int64 // unix nanos of the last ping notification received
	listenerConnected atomic.Int64 // unix nanos of the listener's last connect
	pingNow           chan struct{}
	listenerProblem   atomic.Pointer[string]
	problemLogged     time.Time // owned by the ping loop

	startOnce sync.Once
	stopOnce  sync.Once
	cancel    context.CancelFunc // stops the listener, poller, heartbeats, janitor, row writer
	loops     sync.WaitGroup
	writer    sync.WaitGroup
	reconcile sync.WaitGroup
}

// New builds a Reconciler and its Temporal client (lazy: no connection is made yet).
// pool stays owned by the caller.
func New(cfg Config, pool *pgxpool.Pool, log *slog.Logger) (*Reconciler, error) {
	host, _ := os.Hostname()
	pid := strconv.Itoa(os.Getpid())
	health := newPollHealth()
	m := newMetrics(cfg.MetricsProjectLabels)
	queues := &sync.Map{}
	tc, err := newTemporalClient(cfg, log, health, queues, newSDKMetrics(m.registry, cfg.MetricsProjectLabels, queues))
	if err != nil {
		return nil, err
	}
	var instance [6]byte
	_, _ = rand.Read(instance[:])
	q := db.New(pool)
	replica := cfg.ReplicaID
	if replica == "" {
		replica = host + "-" + pid
	}
	r := &Reconciler{
		cfg:  cfg,
		pool: pool,
		q:    q,
		shared: &shared{
			temporal: tc,
			cfg:      cfg,
			defs:     newDefinitionCache(1024),
			http: egress.New(egress.Options{
				AllowPrivate:     cfg.HTTPAllowPrivate,
				MaxResponseBytes: cfg.HTTPMaxResponseBytes,
				DefaultTimeout:   cfg.HTTPTimeout,
			}),
			limits: cfg.componentLimits(),
		},
		log:          log,
		host:         host,
		pid:          pid,
		instance:     hex.EncodeToString(instance[:]),
		replica:      replica,
		queue:        newQueue(),
		failures:     newFailures(cfg.BackoffBase, cfg.BackoffMax, cfg.BackoffResetAfter),
		health:       health,
		rows:         newRowWriter(q, host, pid, replica, log, m.rowWriteSeconds),
		own:          newOwnership(replica, cfg.MaxProjects),
		renewWake:    make(chan struct{}, 1),
		pingNow:      make(chan struct{}, 1),
		workers:      map[uuid.UUID]*projectWorker{},
		limits:       cfg.workerLimits(),
		pendingPolls: map[uuid.UUID]effectiveOptions{},
		metrics:      m,
		queues:       queues,
	}
	m.registry.MustRegister(newStateCollector(r))
	return r, nil
}

// Temporal is the client the workers use (for `reconciler dev` to run the demo).
func (r *Reconciler) Temporal() client.Client { return r.shared.temporal }

// Start closes rows that processes gone before left open, then begins listening,
// polling and reconciling. It returns at once.
func (r *Reconciler) Start(ctx context.Context) error {
	err := errors.New("reconciler already started")
	r.startOnce.Do(func() {
		if err = r.startOps(); err != nil {
			r.shared.temporal.Close()
			return
		}
		r.warnPooledURL()
		ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := r.closeOrphans(cctx); err != nil {
			r.log.Warn("start-up cleanup of orphaned worker rows failed; the janitor retries", "error", err)
		}
		if err := r.findDeadReplicas(cctx); err != nil {
			r.log.Warn("start-up check of the other replicas failed; the janitor retries", "error", err)
		}
		// Join the replicas (and learn the others) before the first reconcile.
		r.renew(cctx)
		cancel()
		r.writer.Add(1)
		go func() {
			defer r.writer.Done()
			r.rows.Run(ctx)
		}()
		for range r.cfg.Concurrency {
			r.reconcile.Add(1)
			go func() {
				defer r.reconcile.Done()
				r.work()
			}()
		}
		for _, loop := range []func(context.Context){r.listen, r.poll, r.heartbeat, r.janitor, r.renewLoop, r.fenceLoop} {
			r.loops.Add(1)
			go func() {
				defer r.loops.Done()
				loop(ctx)
			}()
		}
		r.log.Info("reconciler started", "replica", r.replica, "host", r.host, "pid", r.pid, "instance", r.instance, "concurrency", r.cfg.Concurrency)
	})
	return err
}

// Stop stops taking work, drains every worker in parallel within ShutdownTimeout,
// writes their rows as stopped, closes the Temporal client and returns. It is safe to
// call more than once.
func (r *Reconciler) Stop() {
	r.startOnce.Do(func() {}) // a Reconciler never started has nothing to drain
	r.stopOnce.Do(func() {
		defer r.shared.temporal.Close()
		if r.cancel == nil {
			return
		}
		defer r.stopOps()
		r.stopping.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
		defer cancel()
		// Leave the assignment first: the other replicas start taking over at once, and
		// each lease is released as soon as its worker has stopped.
		began := time.Now()
		r.own.setDraining()
		if err := r.q.SetDraining(ctx, r.replica); err != nil {
			r.log.Warn("could not announce the shutdown to the other replicas", "error", err)
		}
		r.queue.ShutDown()
		r.reconcile.Wait()
		workers := len(r.liveWorkers())
		drainBegan := time.Now()
		r.stopAll(ctx)
		drained := time.Since(drainBegan)
		if err := r.q.RemoveReplica(ctx, r.replica); err != nil {
			r.log.Warn("could not deregister the replica", "error", err)
		}
		if err := r.rows.Flush(ctx); err != nil {
			r.log.Error("worker rows not written at shutdown", "error", err, "pending", r.rows.Pending())
		}
		r.cancel()
		r.loops.Wait()
		r.writer.Wait()
		r.log.Info("reconciler stopped", "workers", workers, "drain", drained.Round(time.Millisecond), "total", time.Since(began).Round(time.Millisecond))
	})
}

// Run is Start, then Stop when ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	if err := r.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	r.Stop()
	return nil
}

// work takes dirty projects off the queue and reconciles them until shutdown. A failed
// reconcile is retried after the project's backoff.
func (r *Reconciler) work() {
	for {
		id, ok := r.queue.Get()
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ReconcileTimeout)
		began := time.Now()
		act, err := r.reconcileProject(ctx, id)
		cancel()
		outcome := "ok"
		if err != nil {
			outcome = "error"
			var se *startError
			crashed := errors.As(err, &se)
			delay, rec := r.failures.Fail(id, err.Error(), crashed, transientError(err))
			if crashed {
				r.metrics.failures.WithLabelValues(r.metrics.project(id)...).Inc()
				r.rows.Put(r.row(se.pw, statusFailed, se.err))
			}
			r.log.Warn("reconcile failed", "project_id", id, "error", err, "failures", rec.Consecutive, "retry_in", delay.Round(time.Millisecond))
			r.queue.AddAfter(id, delay)
		}
		r.metrics.reconcileSeconds.WithLabelValues(act.String(), outcome).Observe(time.Since(began).Seconds())
		if noticed, ok := r.noticed.LoadAndDelete(id); ok && err == nil && act != actNone {
			r.metrics.notifyToApplied.Observe(time.Since(noticed.(time.Time)).Seconds())
		}
		r.queue.Done(id)
	}
}

// startError is a worker that could not start: the reconcile writes its row as failed.
type startError struct {
	pw  *projectWorker
	err error
}

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// reconcileProject is one observe -> plan -> act pass for one project. A project runs
// here only while it is assigned to this replica and this replica holds its lease.
func (r *Reconciler) reconcileProject(ctx context.Context, id uuid.UUID) (action, error) {
	d, err := r.observe(ctx, id)
	if err != nil {
		return actNone, err
	}
	desiredRunning := d.Exists && d.Running
	r.own.setRunning(id, desiredRunning)
	wanted := desiredRunning && r.own.mine(id)
	lease, held := r.own.holds(id)
	if !d.Exists && held {
		r.own.dropLease(id) // deleted with its project
		held = false
	}
	if wanted && !held {
		var retryAt time.Time
		lease, held, retryAt, err = r.acquire(ctx, id)
		if err != nil {
			return actNone, err
		}
		if !held {
			// Another replica still holds it: try again when it runs out (a release
			// notifies sooner).
			r.queue.AddAfter(id, max(time.Until(retryAt), 0)+50*time.Millisecond)
		}
	}
	d.Running = wanted && held
	a := r.actualOf(id)
	act := plan(d, a)
	log := r.log.With("project_id", id, "action", act.String())
	switch act {
	case actNone:
		if held && !wanted {
			r.release(ctx, id, lease.Term, "", log) // no worker here to stop
		}
		return act, nil
	case actStart:
		return act, r.start(ctx, id, nil, lease.Term, log)
	case actRestart:
		return act, r.start(ctx, id, r.worker(id), lease.Term, log)
	case actReload:
		return act, r.reload(ctx, id, log)
	case actStop:
		var reason string
		switch {
		case !d.Exists:
			reason = "project deleted"
		case !desiredRunning:
			reason = "desired_status is stopped"
		case r.own.isDraining():
			reason = "shutdown"
		default:
			reason = "assigned to another replica"
		}
		r.stop(id, reason, log)
		r.failures.Forget(id)
	}
	return act, nil
}

// acquire tries to take project id's lease. Without it, retryAt says when the
// current holder's lease runs out.
func (r *Reconciler) acquire(ctx context.Context, id uuid.UUID) (l heldLease, ok bool, retryAt time.Time, err error) {
	var dead []string
	if d := r.dead.Load(); d != nil {
		dead = *d
	}
	sent := time.Now()
	row, err := r.q.AcquireLease(ctx, db.AcquireLeaseParams{
		ProjectID:         id,
		Replica:           r.replica,
		TtlSeconds:        r.cfg.LeaseTTL.Seconds(),
		DeadReplicas:      dead,
		StaleAfterSeconds: r.cfg.StaleAfter.Seconds(),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return heldLease{}, false, time.Now().Add(r.cfg.LeaseRenewInterval), nil
	}
	if err != nil {
		return heldLease{}, false, time.Time{}, fmt.Errorf("acquire lease of project %s: %w", id, err)
	}
	if !row.Acquired {
		r.log.Debug("lease held by another replica", "project_id", id, "owner", row.Owner, "expires_at", row.ExpiresAt)
		return heldLease{}, false, row.ExpiresAt, nil
	}
	l = heldLease{Term: row.Term, Expiry: sent.Add(r.cfg.LeaseTTL), Since: sent}
	r.own.setLease(id, l)
	return l, true, time.Time{}, nil
}

// release gives project id's lease up and closes the row of the worker that ran under
// it (workerID, if any); the other replicas are notified.
func (r *Reconciler) release(ctx context.Context, id uuid.UUID, term int64, workerID string, log *slog.Logger) {
	r.own.dropLease(id)
	if _, err := r.q.ReleaseLease(ctx, db.ReleaseLeaseParams{ProjectID: id, Replica: r.replica, Term: term, WorkerID: workerID}); err != nil {
		log.Warn("release lease failed; it expires by itself", "error", err, "term", term)
	}
}

// fence stops project id's worker at once because this replica can no longer prove it
// holds the lease: another replica may take the project over.
func (r *Reconciler) fence(id uuid.UUID, reason string) {
	r.own.dropLease(id)
	r.mu.Lock()
	pw := r.workers[id]
	delete(r.workers, id)
	r.mu.Unlock()
	if pw == nil {
		return
	}
	r.log.Warn("stopping worker: lease not held", "project_id", id, "worker_id", pw.id, "reason", reason)
	r.rows.Put(r.row(pw, statusStopping, nil))
	go func() {
		pw.Stop() // pollers stop first; in-flight activities drain in the background
		r.health.forget(pw.id)
		r.forgetQueue(pw)
		r.rows.Put(r.row(pw, statusStopped, errors.New(reason)))
	}()
}

// observe reads what the database wants for a project.
func (r *Reconciler) observe(ctx context.Context, id uuid.UUID) (desired, error) {
	st, err := r.q.GetProjectState(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return desired{}, nil
	}
	if err != nil {
		return desired{}, fmt.Errorf("read project %s: %w", id, err)
	}
	opts, err := parseWorkerOptions(st.WorkerOptions)
	if err != nil {
		return desired{}, fmt.Errorf("project %s: %w", id, err)
	}
	return desired{
		Exists:            true,
		Running:           st.DesiredStatus == "running",
		Generation:        st.Generation,
		TaskQueue:         st.TaskQueueName,
		Options:           opts,
		RestartGeneration: st.RestartGeneration,
	}, nil
}

func (r *Reconciler) actualOf(id uuid.UUID) actual {
	pw := r.worker(id)
	if pw == nil {
		return actual{}
	}
	return actual{Exists: true, Generation: pw.generation.Load(), TaskQueue: pw.taskQueue, Options: pw.options, StartGeneration: pw.startGeneration}
}

func (r *Reconciler) worker(id uuid.UUID) *projectWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[id]
}

// start starts a worker for the project; with old set, it replaces old once the new
// one polls, so the task queue is never without a worker.
func (r *Reconciler) start(ctx context.Context, id uuid.UUID, old *projectWorker, term int64, log *slog.Logger) error {
	b, err := r.q.LoadProjectBundle(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // deleted meanwhile: the delete's notification stops what runs
	}
	if err != nil {
		return fmt.Errorf("load definitions of project %s: %w", id, err)
	}
	if b.DesiredStatus != "running" {
		return nil
	}
	opts, err := parseWorkerOptions(b.WorkerOptions)
	if err != nil {
		return fmt.Errorf("project %s: %w", id, err)
	}
	set, err := buildServed(b.Generation, b.Workflows, b.Components)
	if err != nil {
		return fmt.Errorf("load definitions of project %s: %w", id, err)
	}

	eff := r.reservePollers(id, opts, old)
	defer r.releasePending(id)
	workerID := r.newWorkerID()
	log = log.With("worker_id", workerID, "generation", b.Generation)
	if eff.Clamped != nil {
		log.Warn("worker_options beyond the operator's limits were clamped", "clamped", eff.Clamped)
	}
	pw, err := newProjectWorker(r.shared, id, workerID, b.TaskQueueName, opts, eff,
		r.log.With("project_id", id, "worker_id", workerID), func(err error) { r.fatal(id, workerID, err, false) })
	if err != nil {
		return err
	}
	pw.served.Store(set)
	pw.generation.Store(b.Generation)
	pw.startGeneration, pw.leaseTerm = b.Generation, term
	r.rows.Put(r.row(pw, statusStarting, nil))
	r.health.watch(workerID)
	r.queues.Store(pw.taskQueue, id.String())
	if err := pw.w.Start(); err != nil {
		pw.Stop()
		r.health.forget(workerID)
		return &startError{pw: pw, err: fmt.Errorf("start worker for project %s: %w", id, err)}
	}
	if old == nil && r.failures.Get(id).Consecutive > 0 {
		r.metrics.restarts.WithLabelValues(r.metrics.project(id)...).Inc()
	}
	r.mu.Lock()
	r.workers[id] = pw
	r.mu.Unlock()
	r.rows.Put(r.row(pw, statusRunning, nil))
	log.Info("worker running", "task_queue", b.TaskQueueName, "workflows", len(set.workflows), "invalid_workflows", len(set.errors))
	if old != nil {
		r.stopWorker(old, "replaced by "+workerID, false, log)
	}
	return nil
}

// reservePollers clamps a starting worker's options to the limits, counting the polls
// held by the replica's live workers (but old, which it replaces) and by other starts
// in progress; the share stays pending until releasePending.
func (r *Reconciler) reservePollers(id uuid.UUID, opts workerOptions, old *projectWorker) effectiveOptions {
	r.pollersMu.Lock()
	defer r.pollersMu.Unlock()
	var usedWf, usedAct int
	for _, pw := range r.liveWorkers() {
		if pw != old {
			wf, act := pw.effective.pollers()
			usedWf, usedAct = usedWf+wf, usedAct+act
		}
	}
	for pid, e := range r.pendingPolls {
		if pid != id {
			wf, act := e.pollers()
			usedWf, usedAct = usedWf+wf, usedAct+act
		}
	}
	eff := r.limits.apply(opts, usedWf, usedAct)
	r.pendingPolls[id] = eff
	return eff
}

// releasePending ends a start's reservation: its worker now counts as live, or failed.
func (r *Reconciler) releasePending(id uuid.UUID) {
	r.pollersMu.Lock()
	defer r.pollersMu.Unlock()
	delete(r.pendingPolls, id)
}

// reload swaps what the running worker serves: no poller is stopped.
func (r *Reconciler) reload(ctx context.Context, id uuid.UUID, log *slog.Logger) error {
	pw := r.worker(id)
	if pw == nil {
		return nil // fenced or failed meanwhile: the next reconcile starts a new one
	}
	b, err := r.q.LoadProjectBundle(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load definitions of project %s: %w", id, err)
	}
	set, err := buildServed(b.Generation, b.Workflows, b.Components)
	if err != nil {
		return fmt.Errorf("load definitions of project %s: %w", id, err)
	}
	pw.served.Store(set)
	pw.generation.Store(b.Generation)
	r.rows.Put(r.row(pw, statusRunning, nil))
	log.Info("worker reloaded", "worker_id", pw.id, "generation", b.Generation, "workflows", len(set.workflows), "invalid_workflows", len(set.errors))
	return nil
}

// stop stops the project's worker, if one runs, and gives up its lease.
func (r *Reconciler) stop(id uuid.UUID, reason string, log *slog.Logger) {
	if pw := r.worker(id); pw != nil {
		r.stopWorker(pw, reason, true, log)
	} else if l, held := r.own.holds(id); held {
		r.release(context.Background(), id, l.Term, "", log)
	}
}

// handoffGrace separates a stopped worker's last (cancelled) poll requests from its
// successor's first.
const handoffGrace = 100 * time.Millisecond

// stopWorker drains one worker (in-flight activities get WorkerStopTimeout) and
// writes stopping, then stopped. With release, the project's lease is given up as soon
// as the worker has stopped, so that another replica may start it at once.
func (r *Reconciler) stopWorker(pw *projectWorker, reason string, release bool, log *slog.Logger) {
	r.mu.Lock()
	if r.workers[pw.project] == pw {
		delete(r.workers, pw.project)
	}
	r.mu.Unlock()
	r.rows.Put(r.row(pw, statusStopping, nil))
	began := time.Now()
	pw.Stop()
	r.health.forget(pw.id)
	r.forgetQueue(pw)
	r.rows.Put(r.row(pw, statusStopped, nil))
	if release {
		if l, held := r.own.holds(pw.project); held && l.Term == pw.leaseTerm {
			// The SDK's Stop returns without waiting for poll requests it cancelled:
			// let those reach Temporal before a successor may poll.
			time.Sleep(handoffGrace)
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ReconcileTimeout)
			r.release(ctx, pw.project, pw.leaseTerm, pw.id, log)
			cancel()
		}
	}
	log.Info("worker stopped", "worker_id", pw.id, "reason", reason, "took", time.Since(began).Round(time.Millisecond))
}

// stopAll stops every worker at once (SIGTERM): each drains within WorkerStopTimeout.
func (r *Reconciler) stopAll(ctx context.Context) {
	r.mu.Lock()
	all := make([]*projectWorker, 0, len(r.workers))
	for _, pw := range r.workers {
		all = append(all, pw)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, pw := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.stopWorker(pw, "shutdown", true, r.log.With("project_id", pw.project))
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Error("workers did not stop within the shutdown timeout", "timeout", r.cfg.ShutdownTimeout)
	}
}

// fatal is called when a worker cannot go on: the SDK's OnFatalError, or polls that
// keep failing with an error retrying will not fix. The worker is marked failed and a
// reconcile replaces it after the project's backoff.
func (r *Reconciler) fatal(id uuid.UUID, workerID string, err error, transient bool) {
	r.mu.Lock()
	pw := r.workers[id]
	if pw == nil || pw.id != workerID {
		r.mu.Unlock()
		return // already replaced or stopped
	}
	delete(r.workers, id)
	r.mu.Unlock()
	r.metrics.failures.WithLabelValues(r.metrics.project(id)...).Inc()
	delay, rec := r.failures.Fail(id, err.Error(), true, transient)
	r.log.Error("worker failed", "project_id", id, "worker_id", workerID, "error", err, "restarts", rec.Crashes, "retry_in", delay.Round(time.Millisecond))
	r.rows.Put(r.row(pw, statusFailed, err))
	go func() {
		pw.Stop()
		r.health.forget(workerID)
		r.forgetQueue(pw)
	}()
	r.queue.AddAfter(id, delay)
}

// forgetQueue drops pw's task queue from the project map of the SDK's logs and
// metrics, unless another worker of the project now polls it.
func (r *Reconciler) forgetQueue(pw *projectWorker) {
	if cur := r.worker(pw.project); cur != nil && cur.taskQueue == pw.taskQueue {
		return
	}
	r.queues.CompareAndDelete(pw.taskQueue, pw.project.String())
}

// row is the whole workflow_workers row of a worker in a given status.
func (r *Reconciler) row(pw *projectWorker, status string, err error) workerRow {
	md := pw.served.Load().metadata()
	md["instance"] = r.instance
	md["replica"] = r.replica
	md["heartbeat_interval_seconds"] = r.cfg.HeartbeatInterval.Seconds()
	rec := r.failures.Get(pw.project)
	md["restarts"] = rec.Crashes
	if rec.LastError != "" {
		md["last_error"] = rec.LastError
	}
	if err != nil {
		md["error"] = err.Error()
		if status == statusFailed && !rec.NextRetry.IsZero() {
			md["next_retry_at"] = rec.NextRetry.UTC().Format(time.RFC3339Nano)
		}
	}
	if pw.effective.Clamped != nil {
		md["worker_options_clamped"] = pw.effective.Clamped
	}
	if pollErr, since := pw.pollProblem(); pollErr != "" && (status == statusRunning || status == statusStarting) {
		md["poll_error"] = pollErr
		md["poll_failing_since"] = since.UTC().Format(time.RFC3339Nano)
	}
	row := workerRow{
		WorkerID:   pw.id,
		ProjectID:  pw.project,
		TaskQueue:  pw.taskQueue,
		Status:     status,
		StartedAt:  pw.startedAt,
		Generation: pw.generation.Load(),
		LeaseTerm:  pw.leaseTerm,
		Metadata:   md,
	}
	if status == statusStopped || status == statusFailed {
		row.StoppedAt = time.Now()
	}
	return row
}

// newWorkerID names a worker instance after its replica: readable, and unique across
// hosts and restarts. It is also the worker's Temporal identity.
func (r *Reconciler) newWorkerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s", r.replica, hex.EncodeToString(b[:]))
}

// liveWorkers lists the workers this process runs now.
func (r *Reconciler) liveWorkers() []*projectWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := make([]*projectWorker, 0, len(r.workers))
	for _, pw := range r.workers {
		all = append(all, pw)
	}
	return all
}
