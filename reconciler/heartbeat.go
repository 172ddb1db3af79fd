package reconciler

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbuilder/reconciler/db"
)

// heartbeater refreshes last_heartbeat of every live worker of this process with one
// statement per interval, then has each worker's polls checked.
type heartbeater struct {
	interval time.Duration
	replica  string
	db       *db.Store
	workers  *workerSet
	log      *slog.Logger
	latency  prometheus.Observer

	tick    atomic.Int64 // unix nanos of the last round, for /healthz
	written atomic.Int64 // unix nanos of the last round whose heartbeats were written (or had none to write)
	runner
}

// Start runs the loop until Stop.
func (h *heartbeater) Start(ctx context.Context) error {
	h.written.Store(time.Now().UnixNano())
	h.start(ctx, h.loop)
	return nil
}

// Age is how long ago heartbeats were last written (or there were none to write).
func (h *heartbeater) Age(now time.Time) time.Duration {
	w := h.written.Load()
	if w == 0 {
		return 0 // not started
	}
	return max(now.Sub(time.Unix(0, w)), 0)
}

// Stop ends the loop; idempotent.
func (h *heartbeater) Stop() {
	h.stop()
}

func (h *heartbeater) loop(ctx context.Context) {
	ticker := time.NewTicker(h.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		h.tick.Store(time.Now().UnixNano())
		workers := h.workers.List()
		if len(workers) == 0 {
			h.written.Store(time.Now().UnixNano())
			continue
		}
		ids := make([]string, len(workers))
		for i, pw := range workers {
			ids[i] = pw.id
		}
		hctx, cancel := context.WithTimeout(ctx, h.interval)
		began := time.Now()
		if _, err := h.db.HeartbeatWorkers(hctx, db.HeartbeatWorkersParams{WorkerIds: ids, Replica: h.replica}); err != nil {
			if ctx.Err() == nil {
				h.log.Warn("heartbeat failed", "error", err, "workers", len(ids))
			}
		} else {
			h.written.Store(time.Now().UnixNano())
		}
		h.latency.Observe(time.Since(began).Seconds())
		cancel()
		h.workers.CheckPolls()
	}
}
