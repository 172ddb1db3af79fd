package reconciler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler/batch"
	"github.com/flowbuilder/reconciler/reconciler/component"
	"github.com/flowbuilder/reconciler/reconciler/egress"
	"github.com/flowbuilder/reconciler/reconciler/lease"
	"github.com/flowbuilder/reconciler/reconciler/script"
)

// Reconciler runs one Temporal worker per project whose desired_status is running.
// It assembles the parts, each with its own start and stop (see doc.go for the model):
// the ops listener, the component sandboxes, the janitor, the lease manager, the row
// writer, the reconciles (queue and driver), the listener, the resyncer and the
// heartbeater.
type Reconciler struct {
	cfg  Config
	log  *slog.Logger
	pool *pgxpool.Pool
	db   *db.Store

	host, pid string
	instance  string // tells this process from an earlier one with the same host and pid
	replica   string // this process's name among the replicas sharing the database

	shared *shared
	// shutdowns: the workers' ShutdownWorker requests, sent in the background.
	shutdowns *detachedShutdowns
	loader    *batch.Batcher[loadRequest, *db.LoadProjectsRow]
	queue     *queue
	failures  *failures
	workers   *workerSet
	rows      *rowWriter
	leases    *lease.Manager
	listener  *listener
	resyncer  *resyncer
	beats     *heartbeater
	recovery  *recovery
	checker   *checker
	janitor   *janitor
	ops       *opsServer
	metrics   *metrics
	search    *searchIndex
	backlog   *backlogSampler

	noticed  sync.Map // project id -> when its notification arrived
	stopping atomic.Bool

	startOnce, stopOnce sync.Once
	started             bool
	reconciles          sync.WaitGroup
}

// New builds a Reconciler and its Temporal client (lazy: no connection is made yet).
// pool stays owned by the caller.
func New(cfg Config, pool *pgxpool.Pool, log *slog.Logger) (*Reconciler, error) {
	host, _ := os.Hostname()
	pid := strconv.Itoa(os.Getpid())
	var instance [6]byte
	_, _ = rand.Read(instance[:])
	replica := cfg.ReplicaID
	if replica == "" {
		replica = host + "-" + pid
	}
	r := &Reconciler{
		cfg:      cfg,
		log:      log,
		pool:     pool,
		db:       db.NewStore(pool),
		host:     host,
		pid:      pid,
		instance: hex.EncodeToString(instance[:]),
		replica:  replica,
		queue:    newQueue(),
		failures: newFailures(cfg.BackoffBase, cfg.BackoffMax, cfg.BackoffResetAfter),
		metrics:  newMetrics(cfg.MetricsProjectLabels),
	}
	r.loader = &batch.Batcher[loadRequest, *db.LoadProjectsRow]{Max: 256, Run: r.loadBatch}
	health := newPollHealth()
	queues := &sync.Map{}
	r.shutdowns = &detachedShutdowns{log: log, timeout: 10 * time.Second}
	tc, err := newTemporalClient(cfg, log, health, r.shutdowns, queues, newSDKMetrics(r.metrics.registry, cfg.MetricsProjectLabels, queues))
	if err != nil {
		return nil, err
	}
	r.shared = &shared{
		temporal: tc,
		cfg:      cfg,
		defs:     newDefinitionCache(1024),
		scripts:  script.NewCache(256 << 20),
		warm:     script.NewWarm(cfg.scriptLimits(), 4),
		http: egress.New(egress.Options{
			AllowPrivate:     cfg.HTTPAllowPrivate,
			MaxResponseBytes: cfg.HTTPMaxResponseBytes,
			DefaultTimeout:   cfg.HTTPTimeout,
		}),
		components: component.NewPool(cfg.componentPool(log)),
	}
	r.search = &searchIndex{temporal: tc, namespace: cfg.TemporalNamespace, log: log, available: r.metrics.searchAttributes}
	r.shared.search = r.search
	loader := dbCompiledLoader(r.db)
	r.shared.compiled.Store(&loader)
	r.rows = newRowWriter(r.db, host, pid, replica, log, r.metrics.rowWriteSeconds)
	r.workers = &workerSet{
		cfg: cfg, shared: r.shared, log: log, rows: r.rows, health: health, failures: r.failures,
		metrics: r.metrics, limits: cfg.workerLimits(), queues: queues, replica: replica, instance: r.instance,
		onFailed:  r.queue.AddAfter,
		onStopped: r.queue.AddAfter,
		workers:   map[uuid.UUID]*projectWorker{},
		stopping:  map[uuid.UUID]int{},
		stopped:   map[uuid.UUID]time.Time{},
		pending:   map[uuid.UUID]effectiveOptions{},
	}
	r.leases = lease.NewManager(lease.Config{
		Replica: replica, Host: host, PID: pid, Capacity: cfg.MaxProjects,
		TTL: cfg.LeaseTTL, RenewInterval: cfg.LeaseRenewInterval, StaleAfter: cfg.StaleAfter,
	}, r.db, log, r.metrics.renewSeconds)
	r.leases.OnLost = r.workers.Fence
	r.leases.OnDirty = r.queue.Add
	r.resyncer = newResyncer(cfg.PollInterval, r.resync, log, r.metrics.resyncSeconds)
	listenConn, err := listenConnConfig(cfg, pool.Config().ConnConfig)
	if err != nil {
		return nil, err
	}
	r.checker = newChecker(r.db, replica, cfg.PollInterval, log, r.metrics.compileCheck, r.shared.scripts)
	r.listener = &listener{
		cfg: cfg, connConfig: listenConn, db: r.db, log: log, instance: r.instance, replica: replica,
		reconnects:  r.metrics.listenerReconnect,
		onProject:   r.notice,
		onCompiled:  r.checker.Check,
		onReplicas:  r.leases.Wake,
		onListening: func() { r.resyncer.Request(); r.checker.Sweep() },
	}
	r.leases.Problem = r.listener.Problem
	r.beats = &heartbeater{
		interval: cfg.HeartbeatInterval, replica: replica, db: r.db, workers: r.workers,
		log: log, latency: r.metrics.heartbeatSeconds,
	}
	r.recovery = &recovery{
		address: cfg.TemporalAddress, temporal: tc, health: health, workers: r.workers, failures: r.failures,
		retry: r.queue.Add, log: log,
	}
	r.janitor = &janitor{cfg: cfg, db: r.db, leases: r.leases, log: log, host: host, pid: pid, instance: r.instance}
	r.ops = &opsServer{addr: cfg.OpsAddr, fleet: newFleetPage(r.db, replica, log), registry: r.metrics.registry, healthy: r.Healthy, ready: r.Ready, log: log}
	r.backlog = newBacklogSampler(cfg, tc, r.workers.List, log)
	r.metrics.registry.MustRegister(newBacklogCollector(r.backlog, cfg.MetricsProjectLabels))
	r.metrics.registry.MustRegister(newTemporalCollector(health))
	r.metrics.registry.MustRegister(newStateCollector(stateCollector{
		workers:      r.workers.List,
		backoff:      r.failures.CrashedWaiting,
		leases:       func() int { n, _ := r.leases.Counts(); return n },
		queueLen:     r.queue.Len,
		pending:      func() int { return r.rows.Waiting(time.Second) },
		listenerUp:   func() bool { return r.ListenerDelivers() && r.listener.Problem() == "" },
		ready:        r.Ready,
		heartbeatAge: func() time.Duration { return r.beats.Age(time.Now()) },
		leaseChanges: r.leases.Changes,
		limited:      r.workers.Limited,
	}))
	r.metrics.registry.MustRegister(newSandboxCollector(r.shared.components.Stats))
	return r, nil
}

// Temporal is the client the workers use (for `reconciler dev` to run the demo).
func (r *Reconciler) Temporal() client.Client { return r.shared.temporal }

// Start closes rows that processes gone before left open, joins the replicas, then
// begins listening, polling and reconciling. It returns at once.
func (r *Reconciler) Start(ctx context.Context) error {
	err := errors.New("reconciler already started")
	r.startOnce.Do(func() {
		if err = r.ops.Start(ctx); err != nil {
			r.shared.temporal.Close()
			return
		}
		if err = r.shared.components.Start(ctx); err != nil {
			r.ops.Stop()
			r.shared.temporal.Close()
			return
		}
		r.started = true
		// The order matters: orphaned rows are closed and the replica has joined (and
		// learnt the others) before the first reconcile; the listener asks for the
		// first resync once LISTEN is in place.
		for _, part := range []interface{ Start(context.Context) error }{r.search, r.janitor, r.leases, r.rows, r.shared.warm} {
			_ = part.Start(ctx)
		}
		for range r.cfg.Concurrency {
			r.reconciles.Add(1)
			go func() {
				defer r.reconciles.Done()
				r.work()
			}()
		}
		for _, part := range []interface{ Start(context.Context) error }{r.checker, r.resyncer, r.listener, r.beats, r.recovery, r.backlog} {
			_ = part.Start(ctx)
		}
		r.log.Info("reconciler started", "replica", r.replica, "host", r.host, "pid", r.pid, "instance", r.instance, "concurrency", r.cfg.Concurrency)
	})
	return err
}

// Stop stops taking work, drains every worker in parallel within ShutdownTimeout,
// releasing each lease as its worker stops, writes their rows as stopped, closes the
// Temporal client and returns. It is safe to call more than once.
func (r *Reconciler) Stop() {
	r.startOnce.Do(func() {}) // a Reconciler never started has nothing to drain
	r.stopOnce.Do(func() {
		defer r.shared.temporal.Close()
		if !r.started {
			return
		}
		defer r.ops.Stop()
		r.stopping.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
		defer cancel()
		// Leave the assignment first: the other replicas start taking over at once, and
		// each lease is released as soon as its worker has stopped.
		began := time.Now()
		r.leases.Drain(ctx)
		r.queue.ShutDown()
		r.reconciles.Wait()
		workers := len(r.workers.List())
		drainBegan := time.Now()
		r.workers.StopAll(ctx, r.releaseAfterStop)
		// Leases of workers that were stopping in the background when the shutdown began.
		if held, _ := r.leases.Counts(); held > 0 {
			time.Sleep(handoffGrace)
			r.leases.ReleaseAll(ctx)
		}
		drained := time.Since(drainBegan)
		// The loops went on during the drain: leases renewed, heartbeats (and /healthz)
		// current. Their work is done now.
		for _, part := range []interface{ Stop() }{r.backlog, r.listener, r.resyncer, r.beats, r.recovery, r.checker, r.janitor, r.leases, r.search, r.shared.warm} {
			part.Stop()
		}
		r.shared.components.Stop() // after the workers: their last calls had their sandboxes
		r.leases.Leave(ctx)
		if err := r.rows.Flush(ctx); err != nil {
			r.log.Error("worker rows not written at shutdown", "error", err, "pending", r.rows.Pending())
		}
		r.rows.Stop()
		r.shutdowns.Wait(ctx) // the stopped workers' last requests, before the client closes
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

// OpsAddr is the address the ops listener is bound to ("" when disabled).
func (r *Reconciler) OpsAddr() string { return r.ops.Addr() }

// Healthy says whether the process's loops go round (lease renewal, fencing,
// heartbeats).
func (r *Reconciler) Healthy() error {
	now := time.Now()
	return errors.Join(
		loopAlive("lease renewal", r.leases.LastRenew(), r.cfg.LeaseRenewInterval, now),
		loopAlive("fencing", r.leases.LastFence(), 100*time.Millisecond, now),
		loopAlive("heartbeat", r.beats.tick.Load(), r.cfg.HeartbeatInterval, now),
	)
}

// Ready checks what the service needs to do its job: the database, the listener's
// connection (and that notifications arrive on it) and Temporal. The map holds "ok" or
// the problem for each.
func (r *Reconciler) Ready(ctx context.Context) (map[string]string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	checks := map[string]string{"database": "ok", "listener": "ok", "temporal": "ok"}
	if err := r.pool.Ping(ctx); err != nil {
		checks["database"] = err.Error()
	}
	switch {
	case r.listener.Problem() != "":
		checks["listener"] = r.listener.Problem()
	case !r.listener.Up():
		checks["listener"] = "not connected"
	case !r.ListenerDelivers():
		checks["listener"] = "connected; catching up (its first notification, or the resync after connecting, is not done yet)"
	}
	if _, err := r.shared.temporal.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		checks["temporal"] = err.Error()
	}
	if r.stopping.Load() {
		checks["shutdown"] = "draining"
	}
	ready := true
	for _, v := range checks {
		if v != "ok" {
			ready = false
		}
	}
	return checks, ready
}

// ComponentSandboxes describes the sandbox processes that run component calls.
func (r *Reconciler) ComponentSandboxes() component.PoolStats { return r.shared.components.Stats() }

// ListenerDelivers says whether the listener is caught up: a notification sent now
// would arrive, and the resync that follows its last connect is done (what changed
// while it was away has been looked at).
func (r *Reconciler) ListenerDelivers() bool {
	return r.listener.Delivers() && r.resyncer.lastOK.Load() >= r.listener.connected.Load()
}

// ListenerProblem says why notifications do not reach this replica, or "".
func (r *Reconciler) ListenerProblem() string { return r.listener.Problem() }
