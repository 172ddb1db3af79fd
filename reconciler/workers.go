package reconciler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
)

// workerSet owns the workers this process runs, one per project, and their rows in
// workflow_workers: its methods are the only way a worker starts, reloads, stops, fails
// or is fenced, and each writes the rows that go with it. A worker that fails (at
// start, or later: the SDK gives up, or its polls cannot work) is taken out of the
// set, its failure recorded with the project's backoff, and its project handed back
// to the reconciles (onFailed) to be started again when the backoff ends.
type workerSet struct {
	cfg      Config
	shared   *shared
	log      *slog.Logger
	rows     *rowWriter
	health   *pollHealth
	failures *failures
	metrics  *metrics
	limits   workerLimits
	queues   *sync.Map // task queue -> project id, for the SDK's logs and metrics
	replica  string
	instance string
	onFailed func(id uuid.UUID, retryIn time.Duration)
	// onStopped is told when a worker stopped in the background has (the project is
	// looked at again: its lease may now be released).
	onStopped func(id uuid.UUID, after time.Duration)

	mu       sync.Mutex
	workers  map[uuid.UUID]*projectWorker
	stopping map[uuid.UUID]int       // workers stopping in the background, by project
	stopped  map[uuid.UUID]time.Time // when the project's last worker finished stopping
	inflight sync.WaitGroup          // background stops

	pollersMu sync.Mutex                     // held while a start takes its share of the poller budget
	pending   map[uuid.UUID]effectiveOptions // starts that took a share and are not in workers yet
}

// startSpec is a worker to start: everything comes from the reconcile's one read of
// the project and its lease.
type startSpec struct {
	Project    uuid.UUID
	TaskQueue  string
	Options    workerOptions // as the project asks
	Served     *servedSet
	Generation int64
	Term       int64          // the lease's term the worker runs under
	Replacing  *projectWorker // restart: stopped once the new worker polls
}

// errWorkerFailed marks an error whose worker failure was recorded (row, backoff,
// retry scheduled): the reconcile has nothing more to do about it.
var errWorkerFailed = errors.New("worker failed")

// Get is the worker of a project, or nil.
func (s *workerSet) Get(id uuid.UUID) *projectWorker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workers[id]
}

// List is every worker of the process.
func (s *workerSet) List() []*projectWorker {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := make([]*projectWorker, 0, len(s.workers))
	for _, pw := range s.workers {
		all = append(all, pw)
	}
	return all
}

// take removes pw from the set if it is the project's current worker.
func (s *workerSet) take(pw *projectWorker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workers[pw.project] != pw {
		return false
	}
	delete(s.workers, pw.project)
	return true
}

// takeID removes the project's current worker (of workerID, when given) and returns it.
func (s *workerSet) takeID(id uuid.UUID, workerID string) *projectWorker {
	s.mu.Lock()
	defer s.mu.Unlock()
	pw := s.workers[id]
	if pw == nil || (workerID != "" && pw.id != workerID) {
		return nil
	}
	delete(s.workers, id)
	return pw
}

// Start starts a worker; with Replacing set, the old one is stopped once the new one
// polls, so the task queue is never without a worker. A worker that cannot start is
// failed (errWorkerFailed).
func (s *workerSet) Start(ctx context.Context, spec startSpec, log *slog.Logger) error {
	eff := s.reservePollers(spec.Project, spec.Options, spec.Replacing)
	defer s.releasePending(spec.Project)
	workerID := s.newWorkerID()
	log = log.With("worker_id", workerID, "generation", spec.Generation)
	if eff.Clamped != nil {
		log.Warn("worker_options beyond the operator's limits were clamped", "clamped", eff.Clamped)
	}
	id := spec.Project
	pw, err := newProjectWorker(s.shared, id, workerID, spec.TaskQueue, spec.Options, eff,
		s.log.With("project_id", id, "worker_id", workerID), func(err error) { s.Fail(id, workerID, err, false) })
	if err != nil {
		return err // nothing was started: the reconcile fails and is retried
	}
	pw.served.Store(spec.Served)
	pw.generation.Store(spec.Generation)
	pw.startGeneration, pw.leaseTerm = spec.Generation, spec.Term
	s.rows.Put(s.row(pw, statusStarting, nil))
	s.health.watch(workerID)
	s.queues.Store(pw.taskQueue, id.String())
	if err := pw.w.Start(); err != nil {
		pw.Stop()
		s.health.forget(workerID)
		s.forgetQueue(pw)
		s.failed(pw, fmt.Errorf("start worker for project %s: %w", id, err), transientError(err))
		return fmt.Errorf("%w: %w", errWorkerFailed, err)
	}
	if spec.Replacing == nil && s.failures.Get(id).Consecutive > 0 {
		s.metrics.restarts.WithLabelValues(s.metrics.project(id)...).Inc()
	}
	s.mu.Lock()
	s.workers[id] = pw
	s.mu.Unlock()
	s.rows.Put(s.row(pw, statusRunning, nil))
	log.Info("worker running", "task_queue", spec.TaskQueue, "workflows", len(spec.Served.workflows), "invalid_workflows", len(spec.Served.errors))
	if spec.Replacing != nil {
		s.StopAsync(spec.Replacing, "replaced by "+workerID, log)
	}
	return nil
}

// Reload swaps what pw serves: no poller is stopped.
func (s *workerSet) Reload(pw *projectWorker, set *servedSet, log *slog.Logger) {
	pw.served.Store(set)
	pw.generation.Store(set.generation)
	s.rows.Put(s.row(pw, statusRunning, nil))
	log.Info("worker reloaded", "worker_id", pw.id, "generation", set.generation, "workflows", len(set.workflows), "invalid_workflows", len(set.errors))
}

// Stop takes pw out of the set and drains it (in-flight activities get
// WorkerStopTimeout), writing stopping, then stopped.
func (s *workerSet) Stop(pw *projectWorker, reason string, log *slog.Logger) {
	s.take(pw)
	s.rows.Put(s.row(pw, statusStopping, nil))
	began := time.Now()
	pw.Stop()
	s.health.forget(pw.id)
	s.forgetQueue(pw)
	s.rows.Put(s.row(pw, statusStopped, nil))
	log.Info("worker stopped", "worker_id", pw.id, "reason", reason, "took", time.Since(began).Round(time.Millisecond))
}

// StopAsync takes pw out of the set and stops it in the background (writing stopping,
// then stopped), so that a reconcile does not wait for its in-flight activities: a mass
// stop runs all its stops at once. StopState tells the plan it is stopping; onStopped
// is told when it has.
func (s *workerSet) StopAsync(pw *projectWorker, reason string, log *slog.Logger) {
	s.take(pw)
	s.mu.Lock()
	s.stopping[pw.project]++
	s.mu.Unlock()
	s.inflight.Add(1)
	go func() {
		defer s.inflight.Done()
		s.Stop(pw, reason, log)
		s.mu.Lock()
		if s.stopping[pw.project]--; s.stopping[pw.project] <= 0 {
			delete(s.stopping, pw.project)
		}
		s.stopped[pw.project] = time.Now()
		for id, at := range s.stopped {
			if time.Since(at) > time.Minute {
				delete(s.stopped, id)
			}
		}
		s.mu.Unlock()
		s.onStopped(pw.project, handoffGrace)
	}()
}

// StopState says whether a worker of the project is stopping in the background, and
// when the last one finished stopping (zero: not lately).
func (s *workerSet) StopState(id uuid.UUID) (stopping bool, stoppedAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping[id] > 0, s.stopped[id]
}

// StopAll stops every worker at once (SIGTERM), calling stopped after each, until ctx
// ends; stops already running in the background are waited for too.
func (s *workerSet) StopAll(ctx context.Context, stopped func(*projectWorker)) {
	var wg sync.WaitGroup
	for _, pw := range s.List() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Stop(pw, "shutdown", s.log.With("project_id", pw.project))
			stopped(pw)
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		s.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Error("workers did not stop within the shutdown timeout", "timeout", s.cfg.ShutdownTimeout)
	}
}

// Fence stops the project's worker at once because this replica can no longer prove
// it holds the lease: its pollers stop first, in-flight activities drain in the
// background.
func (s *workerSet) Fence(id uuid.UUID, reason string) {
	pw := s.takeID(id, "")
	if pw == nil {
		return
	}
	s.log.Warn("stopping worker: lease not held", "project_id", id, "worker_id", pw.id, "reason", reason)
	s.rows.Put(s.row(pw, statusStopping, nil))
	go func() {
		pw.Stop()
		s.health.forget(pw.id)
		s.forgetQueue(pw)
		s.rows.Put(s.row(pw, statusStopped, errors.New(reason)))
	}()
}

// Fail is called when a running worker cannot go on: the SDK's OnFatalError, or polls
// that keep failing with an error retrying will not fix. It is taken out, written
// failed and restarted after the project's backoff.
func (s *workerSet) Fail(id uuid.UUID, workerID string, err error, transient bool) {
	pw := s.takeID(id, workerID)
	if pw == nil {
		return // already replaced or stopped
	}
	s.failed(pw, err, transient)
	go func() {
		pw.Stop()
		s.health.forget(workerID)
		s.forgetQueue(pw)
	}()
}

// failed records a failed worker (not in the set): metrics, backoff, row, retry.
func (s *workerSet) failed(pw *projectWorker, err error, transient bool) {
	s.metrics.failures.WithLabelValues(s.metrics.project(pw.project)...).Inc()
	delay, rec := s.failures.Fail(pw.project, pw.generation.Load(), err.Error(), true, transient)
	s.log.Error("worker failed", "project_id", pw.project, "worker_id", pw.id, "error", err, "restarts", rec.Crashes, "retry_in", delay.Round(time.Millisecond))
	s.rows.Put(s.row(pw, statusFailed, err))
	s.onFailed(pw.project, delay)
}

// CheckPolls acts on what the poll interceptor saw. Polls failing for longer than
// PollFailureThreshold make the worker failed (it is restarted with backoff) when the
// error is one retrying will not fix, or when the worker never polled at all; a worker
// that did poll before shows the outage in its row while the SDK keeps retrying, and
// the row is cleared when polls work again. Polls refused by Temporal's limits show
// too, although others get through.
func (s *workerSet) CheckPolls() {
	for _, pw := range s.List() {
		st := s.health.state(pw.id)
		failing := !st.failingSince.IsZero() && time.Since(st.failingSince) >= s.cfg.PollFailureThreshold
		switch {
		case failing && st.permanent:
			s.Fail(pw.project, pw.id, fmt.Errorf("worker cannot poll task queue %s: %s", pw.taskQueue, pollErrorText(st.lastErr)), false)
		case failing && !st.everOK:
			s.Fail(pw.project, pw.id, fmt.Errorf("worker never polled task queue %s: %s", pw.taskQueue, pollErrorText(st.lastErr)), transientError(st.lastErr))
		case failing:
			if pw.setPollProblem(pollErrorText(st.lastErr), st.failingSince) {
				s.log.Warn("worker cannot poll", "project_id", pw.project, "worker_id", pw.id, "error", st.lastErr, "since", st.failingSince)
				s.rows.Put(s.row(pw, statusRunning, nil))
			}
		case !st.exhausted.IsZero() && time.Since(st.exhausted) < s.cfg.PollFailureThreshold:
			if pw.setPollProblem(pollErrorText(st.exhaustedErr)+" (some polls refused)", st.exhausted) {
				s.log.Warn("worker's polls are refused by Temporal's limits", "project_id", pw.project, "worker_id", pw.id, "error", st.exhaustedErr)
				s.rows.Put(s.row(pw, statusRunning, nil))
			}
		case st.failingSince.IsZero():
			if pw.setPollProblem("", time.Time{}) {
				s.log.Info("worker polls again", "project_id", pw.project, "worker_id", pw.id)
				s.rows.Put(s.row(pw, statusRunning, nil))
			}
		}
	}
}

// Limited counts the workers held back by a limit: worker_options clamped to the
// operator's limits, and polls refused by Temporal's (ResourceExhausted) within the
// poll failure threshold.
func (s *workerSet) Limited() (clamped, pollsRefused int) {
	for _, pw := range s.List() {
		if pw.effective.Clamped != nil {
			clamped++
		}
		if st := s.health.state(pw.id); !st.exhausted.IsZero() && time.Since(st.exhausted) < s.cfg.PollFailureThreshold {
			pollsRefused++
		}
	}
	return clamped, pollsRefused
}

// reservePollers clamps a starting worker's options to the limits, counting the polls
// held by the live workers (but the one it replaces) and by other starts in progress;
// the share stays pending until releasePending.
func (s *workerSet) reservePollers(id uuid.UUID, opts workerOptions, replacing *projectWorker) effectiveOptions {
	s.pollersMu.Lock()
	defer s.pollersMu.Unlock()
	var usedWf, usedAct int
	for _, pw := range s.List() {
		if pw != replacing {
			wf, act := pw.effective.pollers()
			usedWf, usedAct = usedWf+wf, usedAct+act
		}
	}
	for pid, e := range s.pending {
		if pid != id {
			wf, act := e.pollers()
			usedWf, usedAct = usedWf+wf, usedAct+act
		}
	}
	eff := s.limits.apply(opts, usedWf, usedAct)
	s.pending[id] = eff
	return eff
}

// releasePending ends a start's reservation: its worker now counts as live, or failed.
func (s *workerSet) releasePending(id uuid.UUID) {
	s.pollersMu.Lock()
	defer s.pollersMu.Unlock()
	delete(s.pending, id)
}

// forgetQueue drops pw's task queue from the project map of the SDK's logs and
// metrics, unless another worker of the project now polls it.
func (s *workerSet) forgetQueue(pw *projectWorker) {
	if cur := s.Get(pw.project); cur != nil && cur.taskQueue == pw.taskQueue {
		return
	}
	s.queues.CompareAndDelete(pw.taskQueue, pw.project.String())
}

// row is the whole workflow_workers row of a worker in a given status.
func (s *workerSet) row(pw *projectWorker, status string, err error) workerRow {
	md := pw.served.Load().metadata()
	md["instance"] = s.instance
	md["replica"] = s.replica
	md["heartbeat_interval_seconds"] = s.cfg.HeartbeatInterval.Seconds()
	rec := s.failures.Get(pw.project)
	md["restarts"] = rec.Crashes
	if rec.LastError != "" {
		md["last_error"] = rec.LastError
	}
	if err != nil {
		md["error"] = err.Error()
		if status == statusFailed && !rec.NextRetry.IsZero() {
			md["next_retry_at"] = rec.NextRetry.UTC().Format(time.RFC3339Nano)
		}
	}
	if pw.effective.Clamped != nil {
		md["worker_options_clamped"] = pw.effective.Clamped
	}
	if pollErr, since := pw.pollProblem(); pollErr != "" && (status == statusRunning || status == statusStarting) {
		md["poll_error"] = pollErr
		md["poll_failing_since"] = since.UTC().Format(time.RFC3339Nano)
	}
	row := workerRow{
		WorkerID:   pw.id,
		ProjectID:  pw.project,
		TaskQueue:  pw.taskQueue,
		Status:     status,
		StartedAt:  pw.startedAt,
		Generation: pw.generation.Load(),
		LeaseTerm:  pw.leaseTerm,
		Metadata:   md,
	}
	if status == statusStopped || status == statusFailed {
		row.StoppedAt = time.Now()
	}
	return row
}

// newWorkerID names a worker instance after its replica: readable, and unique across
// hosts and restarts. It is also the worker's Temporal identity.
func (s *workerSet) newWorkerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s", s.replica, hex.EncodeToString(b[:]))
}
