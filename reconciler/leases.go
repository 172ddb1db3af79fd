package reconciler

import (
	"context"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/flowbuilder/reconciler/db"
)

// renewLoop renews this replica's leases and registration every LeaseRenewInterval
// (one statement), or at once when another replica announces itself or leaves.
func (r *Reconciler) renewLoop(ctx context.Context) {
	ticker := time.NewTicker(r.cfg.LeaseRenewInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-r.renewWake:
		}
		tick(&r.ticks.renew)
		r.renew(ctx)
	}
}

// replicaStale is how long a replica may go without renewing before the others
// leave it out of the assignment: half a lease, and at least three renewals.
func (r *Reconciler) replicaStale() time.Duration {
	return max(r.cfg.LeaseTTL/2, 3*r.cfg.LeaseRenewInterval)
}

// wakeRenew asks for a renewal (and a fresh view of the replicas) now.
func (r *Reconciler) wakeRenew() {
	select {
	case r.renewWake <- struct{}{}:
	default:
	}
}

// renew is one renewal: extend the leases still held, learn the live replicas,
// reassign, and act on the differences.
func (r *Reconciler) renew(ctx context.Context) {
	// Not alone (lately): stop workers rather than risk running them twice. The others
	// treat a replica that does not fence as possibly alive until StaleAfter.
	fences := r.own.shouldFence(r.cfg.StaleAfter)
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL/4)
	rows, err := r.q.RenewLeases(rctx, db.RenewLeasesParams{
		Replica:             r.replica,
		Host:                r.host,
		ProcessID:           r.pid,
		Capacity:            int32(r.cfg.MaxProjects),
		Draining:            r.own.isDraining(),
		Fences:              fences,
		TtlSeconds:          r.cfg.LeaseTTL.Seconds(),
		ReplicaStaleSeconds: r.replicaStale().Seconds(),
		Problem:             r.ListenerProblem(),
	})
	cancel()
	r.metrics.renewSeconds.Observe(time.Since(sent).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("lease renewal failed", "error", err)
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
	lost, found := r.own.renewed(terms, sent, sent.Add(r.cfg.LeaseTTL), fences || len(others) > 0)
	for _, id := range lost {
		r.fence(id, "the lease was taken over by another replica")
	}
	for _, id := range found {
		r.queue.Add(id) // held in the database but not running here: reconcile it
	}
	r.own.setOthers(others)
	for _, id := range r.own.reassign() {
		r.queue.Add(id)
	}
	if !r.announced.Load() {
		if _, err := r.pool.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, replicasPrefix+r.replica); err == nil {
			r.announced.Store(true)
		}
	}
}

// fenceLoop stops the worker of every lease this replica can no longer count on.
func (r *Reconciler) fenceLoop(ctx context.Context) {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			tick(&r.ticks.fence)
			for _, id := range r.own.expiring(now) {
				r.fence(id, "the lease could not be renewed in time; stopping before another replica may take the project over")
			}
		}
	}
}

// findDeadReplicas records the replicas registered from this host whose process is
// gone: their leases may be taken over without waiting.
func (r *Reconciler) findDeadReplicas(ctx context.Context) error {
	replicas, err := r.q.ListReplicas(ctx)
	if err != nil {
		return err
	}
	var dead []string
	for _, rep := range replicas {
		if rep.Host != r.host || rep.ReplicaID == r.replica {
			continue
		}
		if pid, err := strconv.Atoi(rep.ProcessID); err == nil && !processAlive(pid) {
			dead = append(dead, rep.ReplicaID)
		}
	}
	r.dead.Store(&dead)
	return nil
}
