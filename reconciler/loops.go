package reconciler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
)

// NotifyChannel is the channel the projects trigger notifies, with the project id as payload.
const NotifyChannel = "reconciler_projects"

// listen marks projects dirty as their notifications arrive. Every (re)connect runs a
// full resync first, because notifications sent while disconnected are lost.
func (r *Reconciler) listen(ctx context.Context) {
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig)
		},
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil {
				r.log.Warn("listener", "error", err)
			}
		},
		ReconnectDelay: time.Second,
	}
	l.Handle(NotifyChannel, listenHandler{r})
	if err := l.Listen(ctx); err != nil && !errors.Is(err, context.Canceled) {
		r.log.Error("listener stopped", "error", err)
	}
}

type listenHandler struct{ r *Reconciler }

func (h listenHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	id, err := uuid.Parse(n.Payload)
	if err != nil {
		return fmt.Errorf("notification payload %q is not a project id", n.Payload)
	}
	h.r.queue.Add(id)
	return nil
}

// HandleBacklog runs after LISTEN is in place on every connection: whatever changed
// before is caught by a resync.
func (h listenHandler) HandleBacklog(ctx context.Context, _ string, _ *pgx.Conn) error {
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
	states, err := r.q.ListProjectStates(ctx)
	if err != nil {
		return fmt.Errorf("resync: list projects: %w", err)
	}
	seen := make(map[uuid.UUID]bool, len(states))
	for _, s := range states {
		seen[s.ID] = true
		a := r.actualOf(s.ID)
		running := s.DesiredStatus == "running"
		if running == a.Exists && (!running || a.Generation == s.Generation) {
			continue
		}
		if _, waiting := r.queue.Pending(s.ID); waiting && r.backoff.Failures(s.ID) > 0 {
			continue // a retry is already scheduled: do not defeat its backoff
		}
		r.queue.Add(s.ID)
	}
	r.mu.Lock()
	for id := range r.workers {
		if !seen[id] {
			r.queue.Add(id) // deleted while we were not listening
		}
	}
	r.mu.Unlock()
	return nil
}

// heartbeat refreshes last_heartbeat of every live worker of this process with one
// statement per interval.
func (r *Reconciler) heartbeat(ctx context.Context) {
	ticker := time.NewTicker(r.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		ids := r.liveWorkerIDs()
		if len(ids) == 0 {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, r.cfg.HeartbeatInterval)
		if _, err := r.q.HeartbeatWorkers(hctx, ids); err != nil && ctx.Err() == nil {
			r.log.Warn("heartbeat failed", "error", err, "workers", len(ids))
		}
		cancel()
	}
}

// jitter spreads d over [0.8d, 1.2d).
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
