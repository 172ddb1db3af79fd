package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbuilder/reconciler/db"
)

// resyncer runs the resync: every project's desired status and generation compared
// with what this process runs, the differences marked dirty. It runs on a jittered
// interval (the safety net for anything the listener missed) and on request (after
// every (re)connect of the listener, once LISTEN is in place). A resync that fails is
// retried with a growing delay until one succeeds: the changes it would have found
// must not wait for the next interval.
type resyncer struct {
	interval time.Duration
	resync   func(ctx context.Context) error
	log      *slog.Logger
	duration prometheus.Observer

	requests chan struct{}
	lastOK   atomic.Int64 // unix nanos when the last resync that succeeded began
	runner
}

func newResyncer(interval time.Duration, resync func(context.Context) error, log *slog.Logger, duration prometheus.Observer) *resyncer {
	return &resyncer{interval: interval, resync: resync, log: log, duration: duration, requests: make(chan struct{}, 1)}
}

// Start runs the loop until Stop.
func (s *resyncer) Start(ctx context.Context) error {
	s.start(ctx, s.loop)
	return nil
}

// Stop ends the loop; idempotent.
func (s *resyncer) Stop() {
	s.stop()
}

// Request asks for a resync as soon as possible (requests made meanwhile are merged).
func (s *resyncer) Request() {
	select {
	case s.requests <- struct{}{}:
	default:
	}
}

// resyncRetryMax caps the delay between retries of a failing resync.
const resyncRetryMax = 5 * time.Second

func (s *resyncer) loop(ctx context.Context) {
	next := jitter(s.interval)
	retry := time.Duration(0)
	for {
		wait := next
		if retry > 0 {
			wait = retry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-s.requests:
		}
		pctx, cancel := context.WithTimeout(ctx, max(min(s.interval, time.Minute), 5*time.Second))
		began := time.Now()
		err := s.resync(pctx)
		s.duration.Observe(time.Since(began).Seconds())
		cancel()
		if err == nil {
			s.lastOK.Store(began.UnixNano())
			retry, next = 0, jitter(s.interval)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		retry = min(max(2*retry, 250*time.Millisecond), resyncRetryMax)
		retry = retry/2 + time.Duration(rand.Int64N(int64(retry/2)+1))
		s.log.Warn("resync failed; retrying", "error", err, "retry_in", retry.Round(time.Millisecond))
	}
}

// resync compares every project's desired status and generation with what this
// process runs and marks the differences dirty. It reads three columns per project and
// no definitions: the reconcile of a dirty project reads the rest.
func (r *Reconciler) resync(ctx context.Context) error {
	states, err := r.db.ListProjectStates(ctx)
	if err != nil {
		return fmt.Errorf("resync: list projects: %w", err)
	}
	running := map[uuid.UUID]bool{}
	seen := make(map[uuid.UUID]bool, len(states))
	for _, s := range states {
		seen[s.ID] = true
		if s.DesiredStatus == "running" {
			running[s.ID] = true
		}
	}
	r.leases.ReplaceRunning(running)
	for _, s := range states {
		if r.differs(s, running[s.ID]) {
			r.queue.Add(s.ID)
		}
	}
	for _, pw := range r.workers.List() {
		if !seen[pw.project] {
			r.queue.Add(pw.project) // deleted while we were not listening
		}
	}
	return nil
}

// differs says whether a project's state in the resync differs from what runs here.
func (r *Reconciler) differs(s db.ListProjectStatesRow, running bool) bool {
	mine := running && r.leases.Mine(s.ID)
	pw := r.workers.Get(s.ID)
	_, held := r.leases.Held(s.ID)
	switch {
	case mine != (pw != nil):
		return true
	case mine && pw.generation.Load() != s.Generation:
		return true
	case !mine && held:
		return true
	}
	return false
}

// jitter spreads d over [0.8d, 1.2d).
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
