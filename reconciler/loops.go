package reconciler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/db"
)

// NotifyChannel is the channel the projects trigger notifies, with the project id as
// payload. The listener also sends itself "ping:<instance>" there to prove it is alive.
const NotifyChannel = "reconciler_projects"

const pingPrefix = "ping:"

// replicasPrefix marks notifications that a replica joined or is leaving.
const replicasPrefix = "replicas:"

// listen marks projects dirty as their notifications arrive. Every (re)connect runs a
// full resync first, because notifications sent while disconnected are lost. A
// connection that stops delivering (no ping comes back) is closed and replaced;
// reconnects back off with jitter.
func (r *Reconciler) listen(ctx context.Context) {
	var (
		mu          sync.Mutex
		current     *pgx.Conn
		attempts    int
		connectedAt time.Time
	)
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			mu.Lock()
			if attempts > 0 {
				r.metrics.listenerReconnect.Inc()
			}
			if !connectedAt.IsZero() && time.Since(connectedAt) > 30*time.Second {
				attempts = 0 // the last connection was healthy for a while
			}
			delay := listenerDelay(attempts)
			attempts++
			mu.Unlock()
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(delay):
			}
			conn, err := pgx.ConnectConfig(ctx, r.listenConfig())
			if err != nil {
				return nil, err
			}
			mu.Lock()
			current, connectedAt = conn, time.Now()
			mu.Unlock()
			r.listenerConnected.Store(connectedAt.UnixNano())
			r.listenerUp.Store(true)
			return conn, nil
		},
		LogError: func(ctx context.Context, err error) {
			r.listenerUp.Store(false)
			if ctx.Err() == nil {
				r.log.Warn("listener", "error", err)
			}
		},
		ReconnectDelay: -1, // Connect backs off itself
	}
	l.Handle(NotifyChannel, listenHandler{r})

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.pingListener(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if current != nil {
				// Closing the socket ends WaitForNotification; Listen reconnects.
				_ = current.PgConn().Conn().Close()
			}
		})
	}()
	if err := l.Listen(ctx); err != nil && !errors.Is(err, context.Canceled) {
		r.log.Error("listener stopped", "error", err)
	}
	r.listenerUp.Store(false)
	wg.Wait()
}

// listenerDelay is the wait before the n-th reconnect in a row: none for the first
// connection, then 250 ms doubling to 10 s, jittered.
func listenerDelay(n int) time.Duration {
	if n == 0 {
		return 0
	}
	d := 250 * time.Millisecond
	for i := 1; i < n && d < 10*time.Second; i++ {
		d *= 2
	}
	d = min(d, 10*time.Second)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// listenConfig is the listener's connection: RECONCILER_LISTEN_DATABASE_URL when set
// (validated at start-up), else the pool's.
func (r *Reconciler) listenConfig() *pgx.ConnConfig {
	cfg := r.pool.Config().ConnConfig.Copy()
	if r.cfg.ListenDatabaseURL != "" {
		if c, err := db.ParseURLOf("RECONCILER_LISTEN_DATABASE_URL", r.cfg.ListenDatabaseURL); err == nil {
			cfg = c.ConnConfig
		}
	}
	cfg.RuntimeParams["application_name"] = "reconciler-listener"
	return cfg
}

// pingListener sends a notification to itself every ListenerPingInterval, and right
// after each (re)connect, and calls kill when it does not arrive within
// ListenerPingTimeout. A connection that never delivers even its first ping is not a
// passing network fault: it goes through a pooler that cannot carry LISTEN, which is
// reported (log, /readyz, reconciler_replicas.problem) until a ping arrives.
func (r *Reconciler) pingListener(ctx context.Context, kill func()) {
	for {
		fresh := false
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(r.cfg.ListenerPingInterval)):
		case <-r.pingNow:
			fresh = true
		}
		if !r.listenerUp.Load() {
			continue // reconnecting already
		}
		sent := time.Now()
		pctx, cancel := context.WithTimeout(ctx, r.cfg.ListenerPingTimeout)
		_, err := r.pool.Exec(pctx, "SELECT pg_notify($1, $2)", NotifyChannel, pingPrefix+r.instance)
		cancel()
		if err != nil {
			continue // the database is unreachable: the listener finds out by itself
		}
		if r.pingArrives(ctx, sent) {
			r.setListenerProblem("")
			continue
		}
		if fresh && ctx.Err() == nil {
			r.setListenerProblem(fmt.Sprintf("notifications do not arrive on the listener's connection (%s): it most likely "+
				"goes through a transaction-mode pooler (Supabase's pooled connection string on port 6543, PgBouncer with "+
				"pool_mode = transaction), which cannot carry LISTEN. Set RECONCILER_LISTEN_DATABASE_URL to a direct or "+
				"session-mode connection string of the same database (on Supabase: the direct connection, or the session "+
				"pooler on port 5432). Until then, changes apply only at the next resync (RECONCILER_POLL_INTERVAL, %s)",
				describeConn(r.listenConfig()), r.cfg.PollInterval))
		}
		r.log.Warn("listener missed its own ping; reconnecting", "waited", r.cfg.ListenerPingTimeout)
		r.listenerUp.Store(false)
		kill()
	}
}

// setListenerProblem records why notifications do not arrive ("" when they do) and
// logs each change, repeating a standing problem every ten minutes.
func (r *Reconciler) setListenerProblem(problem string) {
	prev := r.listenerProblem.Swap(&problem)
	switch {
	case problem == "" && prev != nil && *prev != "":
		r.log.Info("notifications arrive on the listener's connection again")
	case problem != "" && (prev == nil || *prev != problem || time.Since(r.problemLogged) > 10*time.Minute):
		r.problemLogged = time.Now()
		r.log.Error("listener", "problem", problem)
	}
}

// ListenerDelivers says whether the listener is connected and has received its own
// ping since it last connected: a notification sent now will arrive.
func (r *Reconciler) ListenerDelivers() bool {
	return r.listenerUp.Load() && r.lastPing.Load() >= r.listenerConnected.Load()
}

// ListenerProblem says why notifications do not reach this replica, or "".
func (r *Reconciler) ListenerProblem() string {
	if p := r.listenerProblem.Load(); p != nil {
		return *p
	}
	return ""
}

// describeConn names a connection for the operator, without its password.
func describeConn(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// warnPooledURL warns at start-up when DATABASE_URL, used for listening too, looks
// like Supabase's transaction pooler; the listener's first ping confirms or not.
func (r *Reconciler) warnPooledURL() {
	if r.cfg.ListenDatabaseURL != "" {
		return
	}
	c := r.pool.Config().ConnConfig
	if c.Port == 6543 || strings.Contains(c.Host, "pooler.supabase.com") && c.Port != 5432 {
		r.log.Warn("DATABASE_URL looks like Supabase's transaction pooler, which cannot carry LISTEN: set RECONCILER_LISTEN_DATABASE_URL to the direct (or session pooler, port 5432) connection string",
			"database", describeConn(c))
	}
}

// pingArrives waits up to ListenerPingTimeout for a ping notification received after sent.
func (r *Reconciler) pingArrives(ctx context.Context, sent time.Time) bool {
	deadline := time.Now().Add(r.cfg.ListenerPingTimeout)
	for r.lastPing.Load() < sent.UnixNano() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return true
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

type listenHandler struct{ r *Reconciler }

func (h listenHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	if strings.HasPrefix(n.Payload, pingPrefix) {
		h.r.lastPing.Store(time.Now().UnixNano()) // anyone's ping proves the connection delivers
		return nil
	}
	if strings.HasPrefix(n.Payload, replicasPrefix) {
		if n.Payload != replicasPrefix+h.r.replica {
			h.r.wakeRenew()
		}
		return nil
	}
	id, err := uuid.Parse(n.Payload)
	if err != nil {
		return fmt.Errorf("notification payload %q is not a project id", n.Payload)
	}
	h.r.noticed.LoadOrStore(id, time.Now())
	h.r.queue.Add(id)
	return nil
}

// HandleBacklog runs after LISTEN is in place on every connection: whatever changed
// before is caught by a resync.
func (h listenHandler) HandleBacklog(ctx context.Context, _ string, _ *pgx.Conn) error {
	select { // LISTEN is in place: prove at once that notifications arrive
	case h.r.pingNow <- struct{}{}:
	default:
	}
	return h.r.resync(ctx)
}

// poll resyncs on a jittered interval: the safety net for anything the listener missed.
func (r *Reconciler) poll(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(r.cfg.PollInterval)):
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PollInterval)
		if err := r.resync(pctx); err != nil && ctx.Err() == nil {
			r.log.Warn("resync failed", "error", err)
		}
		cancel()
	}
}

// resync compares every project's desired status and generation with what this
// process runs and marks the differences dirty. It reads three columns per project and
// no definitions: the reconcile of a dirty project reads the rest.
func (r *Reconciler) resync(ctx context.Context) error {
	began := time.Now()
	defer func() { r.metrics.resyncSeconds.Observe(time.Since(began).Seconds()) }()
	states, err := r.q.ListProjectStates(ctx)
	if err != nil {
		return fmt.Errorf("resync: list projects: %w", err)
	}
	seen := make(map[uuid.UUID]bool, len(states))
	running := map[uuid.UUID]bool{}
	for _, s := range states {
		seen[s.ID] = true
		if s.DesiredStatus == "running" {
			running[s.ID] = true
		}
	}
	r.own.replaceRunning(running)
	for _, id := range r.own.reassign() {
		r.queue.Add(id)
	}
	for _, s := range states {
		mine := running[s.ID] && r.own.mine(s.ID)
		a := r.actualOf(s.ID)
		_, held := r.own.holds(s.ID)
		if mine == a.Exists && (!mine || a.Generation == s.Generation) && (mine || !held) {
			continue
		}
		if r.failures.Waiting(s.ID) {
			continue // a retry is already scheduled: do not defeat its backoff
		}
		r.queue.Add(s.ID)
	}
	for _, pw := range r.liveWorkers() {
		if !seen[pw.project] {
			r.queue.Add(pw.project) // deleted while we were not listening
		}
	}
	return nil
}

// heartbeat refreshes last_heartbeat of every live worker of this process with one
// statement per interval, then checks that each worker can poll.
func (r *Reconciler) heartbeat(ctx context.Context) {
	ticker := time.NewTicker(r.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		tick(&r.ticks.heartbeat)
		r.retryWhenTemporalAnswers(ctx)
		workers := r.liveWorkers()
		if len(workers) == 0 {
			continue
		}
		ids := make([]string, len(workers))
		for i, pw := range workers {
			ids[i] = pw.id
		}
		hctx, cancel := context.WithTimeout(ctx, r.cfg.HeartbeatInterval)
		began := time.Now()
		if _, err := r.q.HeartbeatWorkers(hctx, db.HeartbeatWorkersParams{WorkerIds: ids, Replica: r.replica}); err != nil && ctx.Err() == nil {
			r.log.Warn("heartbeat failed", "error", err, "workers", len(ids))
		}
		r.metrics.heartbeatSeconds.Observe(time.Since(began).Seconds())
		cancel()
		r.checkPolls(workers)
	}
}

// retryWhenTemporalAnswers brings forward the retries of projects that failed because
// Temporal was unreachable, as soon as it answers a health check again: recovery after
// an outage does not wait for backoffs that grew during it.
func (r *Reconciler) retryWhenTemporalAnswers(ctx context.Context) {
	waiting := r.failures.WaitingOnTemporal()
	if len(waiting) == 0 {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, r.cfg.HeartbeatInterval)
	defer cancel()
	if _, err := r.shared.temporal.CheckHealth(hctx, &client.CheckHealthRequest{}); err != nil {
		return
	}
	r.log.Info("Temporal answers again; retrying projects now", "projects", len(waiting))
	for _, id := range waiting {
		r.failures.RetryNow(id)
		r.queue.Add(id)
	}
}

// checkPolls acts on what the poll interceptor saw. Polls failing for longer than
// PollFailureThreshold make the worker failed (it is restarted with backoff) when the
// error is one retrying will not fix, or when the worker never polled at all; a worker
// that did poll before shows the outage in its row while the SDK keeps retrying, and
// the row is cleared when polls work again.
func (r *Reconciler) checkPolls(workers []*projectWorker) {
	for _, pw := range workers {
		st := r.health.state(pw.id)
		failing := !st.failingSince.IsZero() && time.Since(st.failingSince) >= r.cfg.PollFailureThreshold
		switch {
		case failing && st.permanent:
			r.fatal(pw.project, pw.id, fmt.Errorf("worker cannot poll task queue %s: %s", pw.taskQueue, pollErrorText(st.lastErr)), false)
		case failing && !st.everOK:
			r.fatal(pw.project, pw.id, fmt.Errorf("worker never polled task queue %s: %s", pw.taskQueue, pollErrorText(st.lastErr)), transientError(st.lastErr))
		case failing:
			if pw.setPollProblem(pollErrorText(st.lastErr), st.failingSince) {
				r.log.Warn("worker cannot poll", "project_id", pw.project, "worker_id", pw.id, "error", st.lastErr, "since", st.failingSince)
				r.rows.Put(r.row(pw, statusRunning, nil))
			}
		case !st.exhausted.IsZero() && time.Since(st.exhausted) < r.cfg.PollFailureThreshold:
			if pw.setPollProblem(pollErrorText(st.exhaustedErr)+" (some polls refused)", st.exhausted) {
				r.log.Warn("worker's polls are refused by Temporal's limits", "project_id", pw.project, "worker_id", pw.id, "error", st.exhaustedErr)
				r.rows.Put(r.row(pw, statusRunning, nil))
			}
		case st.failingSince.IsZero():
			if pw.setPollProblem("", time.Time{}) {
				r.log.Info("worker polls again", "project_id", pw.project, "worker_id", pw.id)
				r.rows.Put(r.row(pw, statusRunning, nil))
			}
		}
	}
}

// janitor closes rows left open by processes that are gone, and prunes old rows.
func (r *Reconciler) janitor(ctx context.Context) {
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(max(r.cfg.StaleAfter/2, time.Second))):
		}
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := r.closeOrphans(jctx); err != nil && ctx.Err() == nil {
			r.log.Warn("orphan check failed", "error", err)
		}
		if err := r.findDeadReplicas(jctx); err != nil && ctx.Err() == nil {
			r.log.Warn("replica check failed", "error", err)
		}
		if time.Since(lastPrune) > time.Hour {
			if _, err := r.q.DeleteStaleReplicas(jctx, r.cfg.RowRetention.Seconds()); err != nil && ctx.Err() == nil {
				r.log.Warn("forgetting old replicas failed", "error", err)
			}
			n, err := r.q.PruneWorkers(jctx, r.cfg.RowRetention.Seconds())
			if err != nil && ctx.Err() == nil {
				r.log.Warn("pruning old worker rows failed", "error", err)
			} else if err == nil {
				lastPrune = time.Now()
				if n > 0 {
					r.log.Info("pruned old worker rows", "rows", n, "retention", r.cfg.RowRetention)
				}
			}
		}
		cancel()
	}
}

// closeOrphans closes live rows whose process is gone: on this host, a process id that
// no longer runs (or that is now ours, after a restart in a container); on any host, a
// heartbeat older than StaleAfter. Rows of this process are never touched.
func (r *Reconciler) closeOrphans(ctx context.Context) error {
	live, err := r.q.ListLiveWorkers(ctx)
	if err != nil {
		return fmt.Errorf("list live worker rows: %w", err)
	}
	var ids, reasons []string
	for _, w := range live {
		if reason := r.orphaned(w); reason != "" {
			ids = append(ids, w.WorkerID)
			reasons = append(reasons, reason)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	n, err := r.q.CloseOrphanedWorkers(ctx, db.CloseOrphanedWorkersParams{WorkerIds: ids, Reasons: reasons})
	if err != nil {
		return fmt.Errorf("close orphaned worker rows: %w", err)
	}
	r.log.Info("closed worker rows of processes that are gone", "rows", n)
	return nil
}

// orphaned says why a live row's process is gone, or "" when it may still run.
func (r *Reconciler) orphaned(w db.ListLiveWorkersRow) string {
	if w.Instance == r.instance {
		return ""
	}
	who := w.Host + "/" + w.ProcessID
	if w.Host == r.host {
		if w.ProcessID == r.pid {
			return fmt.Sprintf("process %s was restarted (closed by %s/%s at start-up)", who, r.host, r.pid)
		}
		if pid, err := strconv.Atoi(w.ProcessID); err == nil && !processAlive(pid) {
			return fmt.Sprintf("process %s is gone (closed by %s/%s)", who, r.host, r.pid)
		}
	}
	if time.Since(w.SeenAt) > r.cfg.StaleAfter {
		return fmt.Sprintf("process %s is gone: no heartbeat since %s (closed by %s/%s)", who, w.SeenAt.UTC().Format(time.RFC3339), r.host, r.pid)
	}
	return ""
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// jitter spreads d over [0.8d, 1.2d).
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
