// Package lease decides which replica runs which project, when several replicas share
// one database.
//
// Every replica registers in reconciler_replicas and, in one statement per renew
// interval, refreshes its registration, extends every lease it holds in
// project_leases and learns the other live replicas. Projects that should run are
// assigned by rendezvous hashing with bounded loads over the live replicas (a pure
// function: replicas that see the same inputs agree); a replica runs a project's
// worker only while it holds the project's lease.
//
// Invariants:
//
//   - A lease has one owner at a time; its term grows with every change of owner. Every
//     write of a workflow_workers row is conditional on the term its worker started
//     under, so a replica whose lease was taken over cannot overwrite its successor.
//   - A replica never believes it holds a lease longer than the database does: the
//     local expiry is the time the renewal was *sent* plus the TTL.
//   - A replica that fences (it has seen another live replica lately, so someone could
//     take over) stops a project's worker leaseMargin before its local expiry when it
//     could not renew, so the worker has stopped before a successor may acquire.
//   - A replica that has been alone never fences: a database outage must not stop a
//     single-replica deployment. Its leases are taken over only once it is presumed
//     dead (no heartbeat for StaleAfter, or its process gone on the same host).
//   - A renewal cannot know of a lease taken or given up after it was sent: those are
//     left as they are (see ownership.renewed).
//   - Giving a lease up (Release) closes the stopped worker's row and notifies in the
//     same statement, so the successor starts at once and never finds the row live.
//
// Manager is the service: Start renews once synchronously (the replica joins before
// its first reconcile), then runs the renew loop and the fence loop until Stop.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler/batch"
)

// Margin is how long before a lease's expiry (on the replica's own clock) a replica
// that fences stops the project's worker, so that it has stopped polling before anyone
// can take the lease over.
const Margin = 500 * time.Millisecond

// Config is what the manager needs to know of its replica.
type Config struct {
	Replica, Host, PID string
	Capacity           int           // the most projects this replica runs
	TTL                time.Duration // a lease's lifetime without renewal
	RenewInterval      time.Duration
	StaleAfter         time.Duration // a replica silent this long is presumed dead
}

// Lease is a lease this replica holds: its term, and its expiry on the local clock.
type Lease struct {
	Term   int64
	Expiry time.Time
	Since  time.Time // when this replica took it (a renewal sent before cannot know it)
}

// Manager holds this replica's leases and its view of the assignment.
type Manager struct {
	cfg     Config
	db      *db.Store
	log     *slog.Logger
	latency prometheus.Observer
	own     *ownership

	// Set before Start.
	OnLost  func(id uuid.UUID, reason string) // stop the project's worker now: the lease is gone
	OnDirty func(id uuid.UUID)                // reconcile the project: ownership changed
	Problem func() string                     // reported in reconciler_replicas.problem

	acquirer *batch.Batcher[uuid.UUID, *db.AcquireLeasesRow] // nil: the project is gone
	releaser *batch.Batcher[release, struct{}]

	wake      chan struct{}
	dead      atomic.Pointer[[]string] // replicas of this host whose process is gone
	announced atomic.Bool
	renewTick atomic.Int64
	fenceTick atomic.Int64
	acquired  atomic.Int64 // leases taken, since start
	lost      atomic.Int64 // leases taken over by another replica, or given up unrenewed

	startOnce, stopOnce sync.Once
	ctx                 context.Context // of the loops (and of release retries)
	cancel              context.CancelFunc
	mu                  sync.Mutex // guards wg.Add against Stop
	stopped             bool
	wg                  sync.WaitGroup
}

// NewManager builds a manager; renewLatency observes each renewal statement.
func NewManager(cfg Config, store *db.Store, log *slog.Logger, renewLatency prometheus.Observer) *Manager {
	m := &Manager{
		cfg:     cfg,
		db:      store,
		log:     log,
		latency: renewLatency,
		own:     newOwnership(cfg.Replica, cfg.Capacity),
		OnLost:  func(uuid.UUID, string) {},
		OnDirty: func(uuid.UUID) {},
		Problem: func() string { return "" },
		wake:    make(chan struct{}, 1),
	}
	// Acquisitions and releases that happen together (a mass start or stop, a
	// failover) go out as one statement per batch.
	m.acquirer = &batch.Batcher[uuid.UUID, *db.AcquireLeasesRow]{Max: maxBatch, Run: m.acquireBatch}
	m.releaser = &batch.Batcher[release, struct{}]{Max: maxBatch, Run: m.releaseBatch}
	return m
}

// maxBatch bounds the projects of one acquire or release statement.
const maxBatch = 500

// release is one lease to give up.
type release struct {
	project  uuid.UUID
	term     int64
	workerID string
}

func (m *Manager) acquireBatch(ctx context.Context, ids []uuid.UUID) ([]*db.AcquireLeasesRow, error) {
	var dead []string
	if d := m.dead.Load(); d != nil {
		dead = *d
	}
	rows, err := m.db.AcquireLeases(ctx, db.AcquireLeasesParams{
		ProjectIds:        ids,
		Replica:           m.cfg.Replica,
		TtlSeconds:        m.cfg.TTL.Seconds(),
		DeadReplicas:      dead,
		StaleAfterSeconds: m.cfg.StaleAfter.Seconds(),
	})
	if err != nil {
		return nil, err
	}
	byID := make(map[uuid.UUID]*db.AcquireLeasesRow, len(rows))
	for i := range rows {
		byID[rows[i].ProjectID] = &rows[i]
	}
	out := make([]*db.AcquireLeasesRow, len(ids))
	for i, id := range ids {
		out[i] = byID[id]
	}
	return out, nil
}

func (m *Manager) releaseBatch(ctx context.Context, rs []release) ([]struct{}, error) {
	arg := db.ReleaseLeasesParams{Replica: m.cfg.Replica}
	for _, r := range rs {
		arg.ProjectIds = append(arg.ProjectIds, r.project)
		arg.Terms = append(arg.Terms, r.term)
		arg.WorkerIds = append(arg.WorkerIds, r.workerID)
	}
	_, err := m.db.ReleaseLeases(ctx, arg)
	return make([]struct{}, len(rs)), err
}

// Start finds the dead replicas of this host, joins the replicas (one renewal) and
// starts the renew and fence loops. Failures of the first round are logged: the loops
// try again.
func (m *Manager) Start(ctx context.Context) error {
	err := errors.New("lease manager already started")
	m.startOnce.Do(func() {
		err = nil
		ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
		m.ctx = ctx
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := m.FindDead(cctx); err != nil {
			m.log.Warn("start-up check of the other replicas failed; the janitor retries", "error", err)
		}
		m.renew(cctx)
		cancel()
		m.goLoop(m.renewLoop)
		m.goLoop(m.fenceLoop)
	})
	return err
}

// Stop ends the loops and the release retries (the leases are left to expire).
// Idempotent.
func (m *Manager) Stop() {
	m.stopOnce.Do(func() {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		if m.cancel != nil {
			m.cancel()
			m.wg.Wait()
		}
	})
}

// goLoop runs fn in a goroutine that Stop waits for, unless the manager is stopped or
// was never started.
func (m *Manager) goLoop(fn func(ctx context.Context)) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped || m.ctx == nil {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn(m.ctx)
	}()
	return true
}

// Wake asks for a renewal (and a fresh view of the replicas) now.
func (m *Manager) Wake() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Mine says whether project id is assigned to this replica.
func (m *Manager) Mine(id uuid.UUID) bool { return m.own.mine(id) }

// Held returns the lease this replica holds on project id.
func (m *Manager) Held(id uuid.UUID) (Lease, bool) { return m.own.holds(id) }

// Draining says whether this replica is leaving the assignment.
func (m *Manager) Draining() bool { return m.own.isDraining() }

// SetRunning records whether a project should run, as a reconcile has just read it.
func (m *Manager) SetRunning(id uuid.UUID, running bool) { m.own.setRunning(id, running) }

// ReplaceRunning records the full set of projects that should run (a resync) and marks
// dirty those whose owner changed to or from this replica.
func (m *Manager) ReplaceRunning(running map[uuid.UUID]bool) {
	m.own.replaceRunning(running)
	for _, id := range m.own.reassign() {
		m.OnDirty(id)
	}
}

// Counts reports how many leases this replica holds and how many replicas take part.
func (m *Manager) Counts() (leases, replicas int) { return m.own.counts() }

// Changes counts the leases this replica took and lost (taken over by another
// replica, or given up because they could not be renewed in time) since it started:
// churn is a sign of flapping replicas or of a replica cut off from the database.
func (m *Manager) Changes() (acquired, lost int64) { return m.acquired.Load(), m.lost.Load() }

// Acquire tries to take project id's lease. Without it, retryAt says when the current
// holder's lease runs out. db.ErrNotFound: the project is gone.
func (m *Manager) Acquire(ctx context.Context, id uuid.UUID) (l Lease, ok bool, retryAt time.Time, err error) {
	sent := time.Now()
	row, err := m.acquirer.Do(ctx, id)
	if err != nil {
		return Lease{}, false, time.Time{}, fmt.Errorf("acquire lease of project %s: %w", id, err)
	}
	if row == nil {
		return Lease{}, false, time.Time{}, fmt.Errorf("acquire lease of project %s: %w", id, db.ErrNotFound)
	}
	if !row.Acquired {
		m.log.Debug("lease held by another replica", "project_id", id, "owner", row.Owner, "expires_at", row.ExpiresAt)
		return Lease{}, false, row.ExpiresAt, nil
	}
	l = Lease{Term: row.Term, Expiry: sent.Add(m.cfg.TTL), Since: sent}
	m.own.setLease(id, l)
	m.acquired.Add(1)
	return l, true, time.Time{}, nil
}

// Release gives project id's lease (of term) up and closes the row of the worker that
// ran under it (workerID, if any); the other replicas are notified. A release that
// fails is retried in the background until it succeeds or the lease has expired
// anyway: another replica should not wait out a TTL for one lost statement.
func (m *Manager) Release(ctx context.Context, id uuid.UUID, term int64, workerID string) {
	m.own.dropLease(id)
	rel := release{project: id, term: term, workerID: workerID}
	_, err := m.releaser.Do(ctx, rel)
	if err == nil {
		return
	}
	deadline := time.Now().Add(m.cfg.TTL)
	retrying := m.goLoop(func(ctx context.Context) {
		for delay := 100 * time.Millisecond; time.Now().Before(deadline); delay = min(2*delay, 2*time.Second) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := m.releaser.Do(rctx, rel)
			cancel()
			if err == nil {
				m.log.Info("lease released after a retry", "project_id", id, "term", term)
				return
			}
		}
	})
	m.log.Warn("release lease failed", "project_id", id, "error", err, "term", term, "retrying", retrying)
}

// ReleaseAll gives up every lease still held (at the end of a shutdown, when no worker
// runs here any more).
func (m *Manager) ReleaseAll(ctx context.Context) {
	for id, l := range m.own.all() {
		m.Release(ctx, id, l.Term, "")
	}
}

// Drop forgets a lease without telling the database: its project was deleted, or the
// lease could not be renewed in time.
func (m *Manager) Drop(id uuid.UUID) { m.own.dropLease(id) }

// Drain leaves the assignment (the other replicas take over at once) and says so.
func (m *Manager) Drain(ctx context.Context) {
	m.own.setDraining()
	if err := m.db.SetDraining(ctx, m.cfg.Replica); err != nil {
		m.log.Warn("could not announce the shutdown to the other replicas", "error", err)
	}
}

// Leave deregisters the replica (at the end of a shutdown).
func (m *Manager) Leave(ctx context.Context) {
	if err := m.db.RemoveReplica(ctx, m.cfg.Replica); err != nil {
		m.log.Warn("could not deregister the replica", "error", err)
	}
}

// LastRenew and LastFence are when the loops last went round (unix nanos, 0 before).
func (m *Manager) LastRenew() int64 { return m.renewTick.Load() }
func (m *Manager) LastFence() int64 { return m.fenceTick.Load() }

// renewLoop renews every RenewInterval, or at once when woken (another replica
// announced itself or leaves).
func (m *Manager) renewLoop(ctx context.Context) {
	ticker := time.NewTicker(m.cfg.RenewInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-m.wake:
		}
		m.renewTick.Store(time.Now().UnixNano())
		m.renew(ctx)
	}
}

// replicaStale is how long a replica may go without renewing before the others leave
// it out of the assignment: half a lease, and at least three renewals.
func (m *Manager) replicaStale() time.Duration {
	return max(m.cfg.TTL/2, 3*m.cfg.RenewInterval)
}

// renew is one renewal: extend the leases still held, learn the live replicas,
// reassign, and report the differences (OnLost, OnDirty).
func (m *Manager) renew(ctx context.Context) {
	// Not alone (lately): stop workers rather than risk running them twice. The others
	// treat a replica that does not fence as possibly alive until StaleAfter.
	fences := m.own.shouldFence(m.cfg.StaleAfter)
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, m.cfg.TTL/4)
	rows, err := m.db.RenewLeases(rctx, db.RenewLeasesParams{
		Replica:             m.cfg.Replica,
		Host:                m.cfg.Host,
		ProcessID:           m.cfg.PID,
		Capacity:            int32(m.cfg.Capacity),
		Draining:            m.own.isDraining(),
		Fences:              fences,
		TtlSeconds:          m.cfg.TTL.Seconds(),
		ReplicaStaleSeconds: m.replicaStale().Seconds(),
		Problem:             m.Problem(),
	})
	cancel()
	m.latency.Observe(time.Since(sent).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("lease renewal failed", "error", err)
		}
		return
	}
	terms := map[uuid.UUID]int64{}
	var others []replicaInfo
	for _, row := range rows {
		switch row.Kind {
		case "lease":
			if id, err := uuid.Parse(row.ID); err == nil {
				terms[id] = row.N
			}
		case "replica":
			others = append(others, replicaInfo{ID: row.ID, Capacity: int(row.N)})
		}
	}
	// The statement recorded fences OR "another replica is live now": do the same here.
	lost, found := m.own.renewed(terms, sent, sent.Add(m.cfg.TTL), fences || len(others) > 0)
	for _, id := range lost {
		m.lost.Add(1)
		m.OnLost(id, "the lease was taken over by another replica")
	}
	for _, id := range found {
		m.OnDirty(id) // held in the database but not known here: reconcile it
	}
	m.own.setOthers(others)
	for _, id := range m.own.reassign() {
		m.OnDirty(id)
	}
	if !m.announced.Load() {
		if err := m.db.AnnounceReplica(ctx, m.cfg.Replica); err == nil {
			m.announced.Store(true)
		}
	}
}

// fenceLoop gives up every lease this replica can no longer count on, and has its
// worker stopped.
func (m *Manager) fenceLoop(ctx context.Context) {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			m.fenceTick.Store(now.UnixNano())
			for _, id := range m.own.expiring(now) {
				m.own.dropLease(id)
				m.lost.Add(1)
				m.OnLost(id, "the lease could not be renewed in time; stopping before another replica may take the project over")
			}
		}
	}
}

// FindDead records the replicas registered from this host whose process is gone: their
// leases may be taken over without waiting.
func (m *Manager) FindDead(ctx context.Context) error {
	replicas, err := m.db.ListReplicas(ctx)
	if err != nil {
		return fmt.Errorf("list replicas: %w", err)
	}
	var dead []string
	for _, rep := range replicas {
		if rep.Host != m.cfg.Host || rep.ReplicaID == m.cfg.Replica {
			continue
		}
		if pid, err := strconv.Atoi(rep.ProcessID); err == nil && !ProcessAlive(pid) {
			dead = append(dead, rep.ReplicaID)
		}
	}
	m.dead.Store(&dead)
	return nil
}

// ProcessAlive says whether a process of this host is alive.
func ProcessAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
