package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbuilder/reconciler/db"
)

// NotifyChannel is the channel the projects trigger notifies, with the project id as
// payload. The listener also sends itself "ping:<instance>" there to prove it is alive,
// and replicas announce "replicas:<replica>" when they join or leave.
const NotifyChannel = "reconciler_projects"

const (
	pingPrefix     = "ping:"
	replicasPrefix = "replicas:"
	compiledPrefix = "compiled:" // a compiled version to check (compile feedback)
	releasedPrefix = "released:" // released:<replica>:<project id>: a lease given up
)

// listener holds the LISTEN connection: it marks projects dirty as their notifications
// arrive, and asks for a resync after every (re)connect, once LISTEN is in place,
// because notifications sent while disconnected are lost. A connection that stops
// delivering (its own ping does not come back) is closed and replaced; reconnects
// back off with jitter. A connection that never delivers even its first ping goes
// through a pooler that cannot carry LISTEN: that is reported until a ping arrives.
type listener struct {
	cfg        Config
	connConfig *pgx.ConnConfig
	db         *db.Store // for the pings, through the service's pool
	log        *slog.Logger
	instance   string
	replica    string
	reconnects prometheus.Counter

	onProject   func(id uuid.UUID) // a project's notification
	onCompiled  func(id uuid.UUID) // a compiled version to check
	onReplicas  func()             // another replica joined or leaves
	onListening func()             // LISTEN is in place on a new connection

	up        atomic.Bool
	lastPing  atomic.Int64 // unix nanos of the last ping notification received
	connected atomic.Int64 // unix nanos of the last connect
	problem   atomic.Pointer[string]
	logged    time.Time // when the standing problem was last logged; owned by the ping loop
	pingNow   chan struct{}

	mu      sync.Mutex
	current *pgx.Conn

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// listenConnConfig is the listener's connection: RECONCILER_LISTEN_DATABASE_URL when
// set, else the pool's.
func listenConnConfig(cfg Config, pool *pgx.ConnConfig) (*pgx.ConnConfig, error) {
	c := pool.Copy()
	if cfg.ListenDatabaseURL != "" {
		parsed, err := db.ParseURLOf("RECONCILER_LISTEN_DATABASE_URL", cfg.ListenDatabaseURL)
		if err != nil {
			return nil, err
		}
		c = parsed.ConnConfig
	}
	c.RuntimeParams["application_name"] = "reconciler-listener"
	return c, nil
}

// Start connects in the background and keeps listening until Stop.
func (l *listener) Start(ctx context.Context) error {
	l.pingNow = make(chan struct{}, 1)
	l.warnPooledURL()
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.listen(ctx)
	}()
	go func() {
		defer l.wg.Done()
		l.pingLoop(ctx)
	}()
	return nil
}

// Stop closes the connection and waits for the loops; idempotent.
func (l *listener) Stop() {
	l.stopOnce.Do(func() {
		if l.cancel != nil {
			l.cancel()
			l.wg.Wait()
		}
	})
}

func (l *listener) listen(ctx context.Context) {
	var attempts int
	var connectedAt time.Time
	pl := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			if attempts > 0 {
				l.reconnects.Inc()
			}
			if !connectedAt.IsZero() && time.Since(connectedAt) > 30*time.Second {
				attempts = 0 // the last connection was healthy for a while
			}
			delay := listenerDelay(attempts)
			attempts++
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(delay):
			}
			conn, err := pgx.ConnectConfig(ctx, l.connConfig)
			if err != nil {
				return nil, err
			}
			connectedAt = time.Now()
			l.mu.Lock()
			l.current = conn
			l.mu.Unlock()
			l.connected.Store(connectedAt.UnixNano())
			l.up.Store(true)
			return conn, nil
		},
		LogError: func(ctx context.Context, err error) {
			l.up.Store(false)
			if ctx.Err() == nil {
				l.log.Warn("listener", "error", err)
			}
		},
		ReconnectDelay: -1, // Connect backs off itself
	}
	pl.Handle(NotifyChannel, listenHandler{l})
	if err := pl.Listen(ctx); err != nil && !errors.Is(err, context.Canceled) {
		l.log.Error("listener stopped", "error", err)
	}
	l.up.Store(false)
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

// kill closes the current connection's socket: WaitForNotification ends and the
// listener reconnects.
func (l *listener) kill() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.current != nil {
		_ = l.current.PgConn().Conn().Close()
	}
}

// pingLoop sends a notification to itself every ListenerPingInterval, and right after
// each (re)connect, and kills the connection when the ping does not arrive within
// ListenerPingTimeout. A connection that does not deliver even its first ping is a
// pooler's doing: that is reported until a ping arrives.
func (l *listener) pingLoop(ctx context.Context) {
	for {
		fresh := false
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(l.cfg.ListenerPingInterval)):
		case <-l.pingNow:
			fresh = true
		}
		if !l.up.Load() {
			continue // reconnecting already
		}
		sent := time.Now()
		pctx, cancel := context.WithTimeout(ctx, l.cfg.ListenerPingTimeout)
		err := l.db.PingListener(pctx, l.instance)
		cancel()
		if err != nil {
			continue // the database is unreachable: the listener finds out by itself
		}
		if l.pingArrives(ctx, sent) {
			l.setProblem("")
			continue
		}
		if fresh && ctx.Err() == nil {
			l.setProblem(fmt.Sprintf("notifications do not arrive on the listener's connection (%s): it most likely "+
				"goes through a transaction-mode pooler (Supabase's pooled connection string on port 6543, PgBouncer with "+
				"pool_mode = transaction), which cannot carry LISTEN. Set RECONCILER_LISTEN_DATABASE_URL to a direct or "+
				"session-mode connection string of the same database (on Supabase: the direct connection, or the session "+
				"pooler on port 5432). Until then, changes apply only at the next resync (RECONCILER_POLL_INTERVAL, %s)",
				describeConn(l.connConfig), l.cfg.PollInterval))
		}
		l.log.Warn("listener missed its own ping; reconnecting", "waited", l.cfg.ListenerPingTimeout)
		l.up.Store(false)
		l.kill()
	}
}

// pingArrives waits up to ListenerPingTimeout for a ping notification received after sent.
func (l *listener) pingArrives(ctx context.Context, sent time.Time) bool {
	deadline := time.Now().Add(l.cfg.ListenerPingTimeout)
	for l.lastPing.Load() < sent.UnixNano() {
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

// setProblem records why notifications do not arrive ("" when they do) and logs each
// change, repeating a standing problem every ten minutes.
func (l *listener) setProblem(problem string) {
	prev := l.problem.Swap(&problem)
	switch {
	case problem == "" && prev != nil && *prev != "":
		l.log.Info("notifications arrive on the listener's connection again")
	case problem != "" && (prev == nil || *prev != problem || time.Since(l.logged) > 10*time.Minute):
		l.logged = time.Now()
		l.log.Error("listener", "problem", problem)
	}
}

// Problem says why notifications do not reach this replica, or "".
func (l *listener) Problem() string {
	if p := l.problem.Load(); p != nil {
		return *p
	}
	return ""
}

// Up says whether the listener is connected.
func (l *listener) Up() bool { return l.up.Load() }

// Delivers says whether the listener is connected and has received its own ping since
// it last connected: a notification sent now will arrive.
func (l *listener) Delivers() bool {
	return l.up.Load() && l.lastPing.Load() >= l.connected.Load()
}

// warnPooledURL warns at start-up when DATABASE_URL, used for listening too, looks
// like Supabase's transaction pooler; the listener's first ping confirms or not.
func (l *listener) warnPooledURL() {
	if l.cfg.ListenDatabaseURL != "" {
		return
	}
	c := l.connConfig
	if c.Port == 6543 || strings.Contains(c.Host, "pooler.supabase.com") && c.Port != 5432 {
		l.log.Warn("DATABASE_URL looks like Supabase's transaction pooler, which cannot carry LISTEN: set RECONCILER_LISTEN_DATABASE_URL to the direct (or session pooler, port 5432) connection string",
			"database", describeConn(c))
	}
}

// describeConn names a connection for the operator, without its password.
func describeConn(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

type listenHandler struct{ l *listener }

func (h listenHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	switch {
	case strings.HasPrefix(n.Payload, pingPrefix):
		h.l.lastPing.Store(time.Now().UnixNano()) // anyone's ping proves the connection delivers
	case strings.HasPrefix(n.Payload, replicasPrefix):
		if n.Payload != replicasPrefix+h.l.replica {
			h.l.onReplicas()
		}
	case strings.HasPrefix(n.Payload, releasedPrefix):
		// Another replica gave a lease up: the project may be ours to start now. A
		// release of this replica's own needs no second look.
		rest := strings.TrimPrefix(n.Payload, releasedPrefix)
		i := strings.LastIndexByte(rest, ':') // a replica id may hold colons: the project id is last
		if id, err := uuid.Parse(rest[i+1:]); i > 0 && err == nil && rest[:i] != h.l.replica {
			h.l.onProject(id)
		}
	case strings.HasPrefix(n.Payload, compiledPrefix):
		if id, err := uuid.Parse(strings.TrimPrefix(n.Payload, compiledPrefix)); err == nil {
			h.l.onCompiled(id)
		}
	default:
		id, err := uuid.Parse(n.Payload)
		if err != nil {
			h.l.log.Warn("notification payload is not a project id", "payload", n.Payload)
			return nil
		}
		h.l.onProject(id)
	}
	return nil
}

// HandleBacklog runs once LISTEN is in place on a new connection: whatever changed
// before is caught by a resync, and the first ping proves the connection delivers.
func (h listenHandler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	select {
	case h.l.pingNow <- struct{}{}:
	default:
	}
	h.l.onListening()
	return nil
}
