package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler/lease"
)

// janitor closes workflow_workers rows left live by processes that are gone, keeps the
// list of dead replicas of this host current (their leases may be taken over at
// once), and prunes old rows and replicas. It runs once at start-up, then every half
// StaleAfter (jittered).
type janitor struct {
	cfg      Config
	db       *db.Store
	leases   *lease.Manager
	log      *slog.Logger
	host     string
	pid      string
	instance string

	lastPrune time.Time // owned by the loop
	runner
}

// Start closes the rows that processes gone before left open (a failure is logged:
// the loop tries again), then runs the loop until Stop.
func (j *janitor) Start(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := j.closeOrphans(cctx); err != nil {
		j.log.Warn("start-up cleanup of orphaned worker rows failed; the janitor retries", "error", err)
	}
	cancel()
	j.start(ctx, j.loop)
	return nil
}

// Stop ends the loop; idempotent.
func (j *janitor) Stop() {
	j.stop()
}

func (j *janitor) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(max(j.cfg.StaleAfter/2, time.Second))):
		}
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		j.round(ctx, jctx)
		cancel()
	}
}

func (j *janitor) round(ctx, jctx context.Context) {
	if err := j.closeOrphans(jctx); err != nil && ctx.Err() == nil {
		j.log.Warn("orphan check failed", "error", err)
	}
	if err := j.leases.FindDead(jctx); err != nil && ctx.Err() == nil {
		j.log.Warn("replica check failed", "error", err)
	}
	if time.Since(j.lastPrune) < time.Hour {
		return
	}
	if _, err := j.db.DeleteStaleReplicas(jctx, j.cfg.RowRetention.Seconds()); err != nil && ctx.Err() == nil {
		j.log.Warn("forgetting old replicas failed", "error", err)
	}
	n, err := j.db.PruneWorkers(jctx, j.cfg.RowRetention.Seconds())
	switch {
	case err != nil && ctx.Err() == nil:
		j.log.Warn("pruning old worker rows failed", "error", err)
	case err == nil:
		j.lastPrune = time.Now()
		if n > 0 {
			j.log.Info("pruned old worker rows", "rows", n, "retention", j.cfg.RowRetention)
		}
	}
}

// closeOrphans closes live rows whose process is gone: on this host, a process id that
// no longer runs (or that is now ours, after a restart in a container); on any host, a
// heartbeat older than StaleAfter. Rows of this process are never touched.
func (j *janitor) closeOrphans(ctx context.Context) error {
	live, err := j.db.ListLiveWorkers(ctx)
	if err != nil {
		return fmt.Errorf("list live worker rows: %w", err)
	}
	var ids, reasons []string
	for _, w := range live {
		if reason := j.orphaned(w); reason != "" {
			ids = append(ids, w.WorkerID)
			reasons = append(reasons, reason)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	n, err := j.db.CloseOrphanedWorkers(ctx, db.CloseOrphanedWorkersParams{WorkerIds: ids, Reasons: reasons})
	if err != nil {
		return fmt.Errorf("close orphaned worker rows: %w", err)
	}
	j.log.Info("closed worker rows of processes that are gone", "rows", n)
	return nil
}

// orphaned says why a live row's process is gone, or "" when it may still run.
func (j *janitor) orphaned(w db.ListLiveWorkersRow) string {
	if w.Instance == j.instance {
		return ""
	}
	who := w.Host + "/" + w.ProcessID
	if w.Host == j.host {
		if w.ProcessID == j.pid {
			return fmt.Sprintf("process %s was restarted (closed by %s/%s at start-up)", who, j.host, j.pid)
		}
		if pid, err := strconv.Atoi(w.ProcessID); err == nil && !lease.ProcessAlive(pid) {
			return fmt.Sprintf("process %s is gone (closed by %s/%s)", who, j.host, j.pid)
		}
	}
	if time.Since(w.SeenAt) > j.cfg.StaleAfter {
		return fmt.Sprintf("process %s is gone: no heartbeat since %s (closed by %s/%s)", who, w.SeenAt.UTC().Format(time.RFC3339), j.host, j.pid)
	}
	return ""
}
