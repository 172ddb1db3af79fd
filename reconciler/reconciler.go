package reconciler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
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

	mu      sync.Mutex
	workers map[uuid.UUID]*projectWorker

	listenerUp atomic.Bool
	lastPing   atomic.Int64 // unix nanos of the last ping notification received

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
	tc, err := newTemporalClient(cfg, log, health)
	if err != nil {
		return nil, err
	}
	var instance [6]byte
	_, _ = rand.Read(instance[:])
	q := db.New(pool)
	return &Reconciler{
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
		log:      log,
		host:     host,
		pid:      pid,
		instance: hex.EncodeToString(instance[:]),
		replica:  host + "-" + pid,
		queue:    newQueue(),
		failures: newFailures(cfg.BackoffBase, cfg.BackoffMax, cfg.BackoffResetAfter),
		health:   health,
		rows:     newRowWriter(q, host, pid, log),
		workers:  map[uuid.UUID]*projectWorker{},
	}, nil
}

// Temporal is the client the workers use (for `reconciler dev` to run the demo).
func (r *Reconciler) Temporal() client.Client { return r.shared.temporal }

// Start closes rows that processes gone before left open, then begins listening,
// polling and reconciling. It returns at once.
func (r *Reconciler) Start(ctx context.Context) error {
	err := errors.New("reconciler already started")
	r.startOnce.Do(func() {
		err = nil
		ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := r.closeOrphans(cctx); err != nil {
			r.log.Warn("start-up cleanup of orphaned worker rows failed; the janitor retries", "error", err)
		}
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
		for _, loop := range []func(context.Context){r.listen, r.poll, r.heartbeat, r.janitor} {
			r.loops.Add(1)
			go func() {
				defer r.loops.Done()
				loop(ctx)
			}()
		}
		r.log.Info("reconciler started", "host", r.host, "pid", r.pid, "instance", r.instance, "concurrency", r.cfg.Concurrency)
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
		r.queue.ShutDown()
		r.reconcile.Wait()

		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
		defer cancel()
		r.stopAll(ctx)
		if err := r.rows.Flush(ctx); err != nil {
			r.log.Error("worker rows not written at shutdown", "error", err, "pending", r.rows.Pending())
		}
		r.cancel()
		r.loops.Wait()
		r.writer.Wait()
		r.log.Info("reconciler stopped")
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
		err := r.reconcileProject(ctx, id)
		cancel()
		if err != nil {
			var se *startError
			crashed := errors.As(err, &se)
			delay, rec := r.failures.Fail(id, err.Error(), crashed, transientError(err))
			if crashed {
				r.rows.Put(r.row(se.pw, statusFailed, se.err))
			}
			r.log.Warn("reconcile failed", "project_id", id, "error", err, "failures", rec.Consecutive, "retry_in", delay.Round(time.Millisecond))
			r.queue.AddAfter(id, delay)
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

// reconcileProject is one observe -> plan -> act pass for one project.
func (r *Reconciler) reconcileProject(ctx context.Context, id uuid.UUID) error {
	d, err := r.observe(ctx, id)
	if err != nil {
		return err
	}
	a := r.actualOf(id)
	act := plan(d, a)
	if act == actNone {
		return nil
	}
	log := r.log.With("project_id", id, "action", act.String())
	log.Debug("reconcile", "desired_generation", d.Generation, "actual_generation", a.Generation)
	switch act {
	case actStart:
		return r.start(ctx, id, nil, log)
	case actRestart:
		return r.start(ctx, id, r.worker(id), log)
	case actReload:
		return r.reload(ctx, id, log)
	case actStop:
		reason := "desired_status is stopped"
		if !d.Exists {
			reason = "project deleted"
		}
		r.stop(id, reason, log)
		r.failures.Forget(id)
	}
	return nil
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
	return actual{Exists: true, Generation: pw.generation, TaskQueue: pw.taskQueue, Options: pw.options, StartGeneration: pw.startGeneration}
}

func (r *Reconciler) worker(id uuid.UUID) *projectWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[id]
}

// start starts a worker for the project; with old set, it replaces old once the new
// one polls, so the task queue is never without a worker.
func (r *Reconciler) start(ctx context.Context, id uuid.UUID, old *projectWorker, log *slog.Logger) error {
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

	workerID := r.newWorkerID()
	log = log.With("worker_id", workerID, "generation", b.Generation)
	pw, err := newProjectWorker(r.shared, id, workerID, b.TaskQueueName, opts,
		r.log.With("project_id", id, "worker_id", workerID), func(err error) { r.fatal(id, workerID, err, false) })
	if err != nil {
		return err
	}
	pw.served.Store(set)
	pw.generation, pw.startGeneration = b.Generation, b.Generation
	r.rows.Put(r.row(pw, statusStarting, nil))
	r.health.watch(workerID)
	if err := pw.w.Start(); err != nil {
		pw.Stop()
		r.health.forget(workerID)
		return &startError{pw: pw, err: fmt.Errorf("start worker for project %s: %w", id, err)}
	}
	r.mu.Lock()
	r.workers[id] = pw
	r.mu.Unlock()
	r.rows.Put(r.row(pw, statusRunning, nil))
	log.Info("worker running", "task_queue", b.TaskQueueName, "workflows", len(set.workflows), "invalid_workflows", len(set.errors))
	if old != nil {
		r.stopWorker(old, "replaced by "+workerID, log)
	}
	return nil
}

// reload swaps what the running worker serves: no poller is stopped.
func (r *Reconciler) reload(ctx context.Context, id uuid.UUID, log *slog.Logger) error {
	pw := r.worker(id)
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
	pw.generation = b.Generation
	r.rows.Put(r.row(pw, statusRunning, nil))
	log.Info("worker reloaded", "worker_id", pw.id, "generation", b.Generation, "workflows", len(set.workflows), "invalid_workflows", len(set.errors))
	return nil
}

// stop stops the project's worker, if one runs.
func (r *Reconciler) stop(id uuid.UUID, reason string, log *slog.Logger) {
	if pw := r.worker(id); pw != nil {
		r.stopWorker(pw, reason, log)
	}
}

// stopWorker drains one worker (in-flight activities get WorkerStopTimeout) and
// writes stopping, then stopped.
func (r *Reconciler) stopWorker(pw *projectWorker, reason string, log *slog.Logger) {
	r.mu.Lock()
	if r.workers[pw.project] == pw {
		delete(r.workers, pw.project)
	}
	r.mu.Unlock()
	r.rows.Put(r.row(pw, statusStopping, nil))
	began := time.Now()
	pw.Stop()
	r.health.forget(pw.id)
	r.rows.Put(r.row(pw, statusStopped, nil))
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
			r.stopWorker(pw, "shutdown", r.log.With("project_id", pw.project))
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
	delay, rec := r.failures.Fail(id, err.Error(), true, transient)
	r.log.Error("worker failed", "project_id", id, "worker_id", workerID, "error", err, "restarts", rec.Crashes, "retry_in", delay.Round(time.Millisecond))
	r.rows.Put(r.row(pw, statusFailed, err))
	go func() {
		pw.Stop()
		r.health.forget(workerID)
	}()
	r.queue.AddAfter(id, delay)
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
		Generation: pw.generation,
		Metadata:   md,
	}
	if status == statusStopped || status == statusFailed {
		row.StoppedAt = time.Now()
	}
	return row
}

// newWorkerID names a worker instance: readable, and unique across hosts and restarts.
func (r *Reconciler) newWorkerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", r.host, r.pid, hex.EncodeToString(b[:]))
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
