package reconciler

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/google/uuid"

	"github.com/flowbuilder/reconciler/db"
)

// The driver: Concurrency goroutines take dirty projects off the queue, and for each
// run one pass of observe -> plan -> act. The plan (plan.go) makes the whole decision;
// the driver applies it, owns every requeue (the step's, and the backoff of a failed
// pass), recovers a panicking pass, and bounds each pass and each lease release with
// a timeout.

// work reconciles dirty projects until the queue shuts down.
func (r *Reconciler) work() {
	for {
		id, ok := r.queue.Get()
		if !ok {
			return
		}
		r.reconcileOne(id)
		r.queue.Done(id)
	}
}

// reconcileOne runs one pass for project id and handles its outcome.
func (r *Reconciler) reconcileOne(id uuid.UUID) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ReconcileTimeout)
	defer cancel()
	began := time.Now()
	// The notification this pass answers, if any: one that arrives during the pass is
	// answered by the next pass, which the queue guarantees.
	noticed, wasNoticed := r.noticed.LoadAndDelete(id)
	act, generation, err := r.pass(ctx, id)
	outcome := "ok"
	switch {
	case errors.Is(err, errWorkerFailed):
		outcome = "error" // recorded, and its retry scheduled, by the worker set
	case err != nil:
		outcome = "error"
		delay, rec := r.failures.Fail(id, generation, err.Error(), false, transientError(err))
		r.log.Warn("reconcile failed", "project_id", id, "error", err, "failures", rec.Consecutive, "retry_in", delay.Round(time.Millisecond))
		r.queue.AddAfter(id, delay)
	}
	r.metrics.reconcileSeconds.WithLabelValues(act.String(), outcome).Observe(time.Since(began).Seconds())
	if wasNoticed && err == nil && act != actNone && act != actAcquire {
		r.metrics.notifyToApplied.Observe(time.Since(noticed.(time.Time)).Seconds())
	}
}

// maxPlans bounds the plans of one pass: acquiring the lease is the only step after
// which the pass plans again.
const maxPlans = 3

// pass is one observe -> plan -> act for one project. It returns the action taken and
// the project's generation.
func (r *Reconciler) pass(ctx context.Context, id uuid.UUID) (act action, generation int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("reconcile panicked", "project_id", id, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("reconcile of project %s panicked: %v", id, p)
		}
	}()
	o, project, err := r.observe(ctx, id)
	if err != nil {
		return actNone, 0, err
	}
	for range maxPlans {
		s := plan(o)
		if s.Action != actAcquire {
			return s.Action, o.Desired.Generation, r.act(ctx, id, s, o, project)
		}
		l, held, retryAt, err := r.leases.Acquire(ctx, id)
		switch {
		case errors.Is(err, db.ErrNotFound):
			o.Desired = desired{} // deleted meanwhile
		case err != nil:
			return actAcquire, o.Desired.Generation, err
		case held:
			o.Lease.Held, o.Lease.Term = true, l.Term
		case retryAt.IsZero():
			o.Lease.Elsewhere = time.Now().Add(r.cfg.LeaseRenewInterval)
		default:
			o.Lease.Elsewhere = retryAt
		}
		o.Now = time.Now()
	}
	return actAcquire, o.Desired.Generation, fmt.Errorf("reconcile of project %s: no decision after %d plans", id, maxPlans)
}

// observe reads what the database wants for a project (one statement, with its
// definitions when a worker will need them), what this process runs, the lease and the
// project's failure history.
func (r *Reconciler) observe(ctx context.Context, id uuid.UUID) (observation, db.LoadProjectsRow, error) {
	pw := r.workers.Get(id)
	served := int64(-1)
	o := observation{}
	if pw != nil {
		served = pw.generation.Load()
		o.Actual = actual{Exists: true, Generation: served, TaskQueue: pw.taskQueue, Options: pw.options,
			StartGeneration: pw.startGeneration, Replace: pw.replace.Load()}
	}
	o.Actual.Stopping, o.Actual.StoppedAt = r.workers.StopState(id)
	p, err := r.loadProject(ctx, id, served)
	switch {
	case errors.Is(err, db.ErrNotFound):
	case err != nil:
		return observation{}, p, err
	default:
		opts, err := parseWorkerOptions(p.WorkerOptions)
		if err != nil {
			return observation{}, p, fmt.Errorf("project %s: %w", id, err)
		}
		o.Desired = desired{
			Exists:            true,
			Running:           p.DesiredStatus == "running",
			Generation:        p.Generation,
			TaskQueue:         p.TaskQueueName,
			Options:           opts,
			RestartGeneration: p.RestartGeneration,
		}
	}
	r.leases.SetRunning(id, o.Desired.Exists && o.Desired.Running)
	l, held := r.leases.Held(id)
	o.Lease = leaseView{Mine: r.leases.Mine(id), Held: held, Term: l.Term, Draining: r.leases.Draining()}
	rec := r.failures.Get(id)
	o.History = history{NextRetry: rec.NextRetry, Generation: rec.Generation}
	o.Now = time.Now()
	return o, p, nil
}

// act applies a step.
func (r *Reconciler) act(ctx context.Context, id uuid.UUID, s step, o observation, p db.LoadProjectsRow) error {
	log := r.log.With("project_id", id, "action", s.Action.String())
	if s.DropLease {
		r.leases.Drop(id)
	}
	if s.Forget {
		r.failures.Forget(id)
	}
	if s.RequeueAfter > 0 {
		r.queue.AddAfter(id, s.RequeueAfter)
	}
	pw := r.workers.Get(id)
	switch s.Action {
	case actStart, actRestart, actReload:
		if !p.Definitions {
			// Read without them (a restart at an unchanged generation): read again.
			var err error
			if p, err = r.loadProject(ctx, id, -1); errors.Is(err, db.ErrNotFound) {
				return nil // deleted meanwhile: its notification stops what runs
			} else if err != nil {
				return err
			}
		}
		set, err := servedFrom(p, r.shared.scripts)
		if err != nil {
			return err
		}
		if s.Action == actReload {
			if pw == nil {
				return nil // fenced or failed meanwhile: the next reconcile starts a new one
			}
			r.workers.Reload(pw, set, log)
			return nil
		}
		spec := startSpec{Project: id, TaskQueue: o.Desired.TaskQueue, Options: o.Desired.Options,
			Served: set, Generation: set.generation, Term: o.Lease.Term}
		if s.Action == actRestart {
			spec.Replacing = pw
		}
		return r.workers.Start(ctx, spec, log)
	case actStop:
		if pw != nil {
			r.workers.StopAsync(pw, s.Reason, log)
		}
	case actRelease:
		rctx, cancel := context.WithTimeout(context.Background(), r.cfg.ReconcileTimeout)
		defer cancel()
		r.leases.Release(rctx, id, o.Lease.Term, "")
	}
	return nil
}

// handoffGrace separates a stopped worker's last (cancelled) poll requests from its
// successor's first: the SDK's Stop returns without waiting for the poll requests it
// cancelled.
const handoffGrace = 100 * time.Millisecond

// releaseAfterStop gives up the lease a stopped worker ran under, if this replica still
// holds it under that term, so that another replica may start the project at once
// (SIGTERM: the reconciles have ended, nothing starts the project here again).
func (r *Reconciler) releaseAfterStop(pw *projectWorker) {
	if l, held := r.leases.Held(pw.project); !held || l.Term != pw.leaseTerm {
		return
	}
	time.Sleep(handoffGrace)
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ReconcileTimeout)
	defer cancel()
	r.leases.Release(ctx, pw.project, pw.leaseTerm, pw.id)
}

// notice marks a project dirty because its notification arrived.
func (r *Reconciler) notice(id uuid.UUID) {
	r.noticed.LoadOrStore(id, time.Now())
	r.queue.Add(id)
}

// loadRequest is one project to read: its id, and the generation its worker serves
// here (-1 without one), which decides whether its definitions are read too.
type loadRequest struct {
	id     uuid.UUID
	served int64
}

// loadProject reads a project for a pass (db.ErrNotFound: deleted). Passes that read at
// the same time share one statement.
func (r *Reconciler) loadProject(ctx context.Context, id uuid.UUID, served int64) (db.LoadProjectsRow, error) {
	p, err := r.loader.Do(ctx, loadRequest{id: id, served: served})
	if err != nil {
		return db.LoadProjectsRow{}, fmt.Errorf("read project %s: %w", id, err)
	}
	if p == nil {
		return db.LoadProjectsRow{}, db.ErrNotFound
	}
	return *p, nil
}

// loadBatch reads many projects in one statement.
func (r *Reconciler) loadBatch(ctx context.Context, reqs []loadRequest) ([]*db.LoadProjectsRow, error) {
	arg := db.LoadProjectsParams{Ids: make([]uuid.UUID, len(reqs)), ServedGenerations: make([]int64, len(reqs))}
	for i, q := range reqs {
		arg.Ids[i], arg.ServedGenerations[i] = q.id, q.served
	}
	rows, err := r.db.LoadProjects(ctx, arg)
	if err != nil {
		return nil, err
	}
	byID := make(map[uuid.UUID]*db.LoadProjectsRow, len(rows))
	for i := range rows {
		byID[rows[i].ID] = &rows[i]
	}
	out := make([]*db.LoadProjectsRow, len(reqs))
	for i, q := range reqs {
		out[i] = byID[q.id]
	}
	return out, nil
}
