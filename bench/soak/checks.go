package main

// The end: every project set running, convergence measured, a probe run on every
// project, every workload run waited for, and the invariants checked. Every check
// polls with a deadline: a single sample proves nothing.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
)

// results are the figures of the report.
type results struct {
	lastFault   time.Time
	convergence []time.Duration // per project, after the last fault
	unconverged int

	byStatus      map[string]int // workload runs by outcome
	byKind        map[string]int
	byLanguage    map[string]int // of the run's project's workflow
	started       int
	neverStarted  int // Temporal never acknowledged the start and has no such run
	completed     int
	failed        int
	lost          int
	duplicated    int
	wrongVersion  int
	olderPinned   int // pinned a version older than the newest committed at the start (allowed)
	versionsSeen  int
	probes        int
	probesOK      int
	probeLatency  []time.Duration
	executions    int
	liveOrphans   int
	leaseProblems int
	overlaps      []overlap
	panics        int
	errorLines    int
	replicaStarts map[string]int
	checkTook     time.Duration
}

// setAllRunning sets every project running, retrying until PostgreSQL takes it.
func (s *soak) setAllRunning(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.pool.Exec(cctx, `UPDATE projects SET desired_status = 'running' WHERE desired_status <> 'running'`)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("set every project running: %w", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// projectState is what the database says of one project, for convergence and the
// row and lease invariants.
type projectState struct {
	id                     uuid.UUID
	desired                string
	generation             int64
	live                   int // rows starting, running or stopping
	status, replica, pid   string
	rowGen, rowTerm        int64
	owner                  string
	term                   int64
	leaseLive, ownerInRows bool
}

func (s *soak) states(ctx context.Context) ([]projectState, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := s.pool.Query(cctx, `
		SELECT p.id, p.desired_status, p.generation,
		       (SELECT count(*) FROM workflow_workers w WHERE w.project_id = p.id AND w.status IN ('starting', 'running', 'stopping')),
		       coalesce(n.status, ''), coalesce(n.replica_id, ''), coalesce(n.process_id, ''),
		       coalesce(n.generation, 0), coalesce(n.lease_term, 0),
		       coalesce(l.owner, ''), coalesce(l.term, 0), coalesce(l.expires_at > now(), false)
		FROM projects p
		LEFT JOIN LATERAL (SELECT * FROM workflow_workers w WHERE w.project_id = p.id
		                   ORDER BY started_at DESC, id DESC LIMIT 1) n ON true
		LEFT JOIN project_leases l ON l.project_id = p.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []projectState
	for rows.Next() {
		var st projectState
		if err := rows.Scan(&st.id, &st.desired, &st.generation, &st.live, &st.status, &st.replica, &st.pid,
			&st.rowGen, &st.rowTerm, &st.owner, &st.term, &st.leaseLive); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// problem says why a project is not in its desired state, or "" when it is: for a
// running project, exactly one live row, running, serving the project's generation,
// on the live lease's owner with the lease's term, written by that replica's current
// process; for a stopped one, no live row.
func (s *soak) problem(st projectState, pids map[string]string) string {
	if st.desired != "running" {
		if st.live != 0 {
			return fmt.Sprintf("stopped project with %d live rows", st.live)
		}
		return ""
	}
	switch {
	case st.live != 1:
		return fmt.Sprintf("%d live rows", st.live)
	case st.status != "running":
		return "newest row " + st.status
	case st.rowGen != st.generation:
		return fmt.Sprintf("row serves generation %d of %d", st.rowGen, st.generation)
	case !st.leaseLive:
		return "lease expired or missing"
	case st.replica != st.owner:
		return fmt.Sprintf("row on %s, lease owned by %s", st.replica, st.owner)
	case st.rowTerm != st.term:
		return fmt.Sprintf("row term %d, lease term %d", st.rowTerm, st.term)
	case pids[st.replica] == "":
		return fmt.Sprintf("row on %s, whose process is not running", st.replica)
	case pids[st.replica] != st.pid:
		return fmt.Sprintf("row written by %s's process %s, which is gone (now %s)", st.replica, st.pid, pids[st.replica])
	}
	return ""
}

// waitConverged polls until every project is in its desired state and returns, per
// project, how long after since it first was.
func (s *soak) waitConverged(ctx context.Context, timeout time.Duration, since time.Time) (map[uuid.UUID]time.Duration, error) {
	at := map[uuid.UUID]time.Duration{}
	deadline := time.Now().Add(timeout)
	var last []string
	for {
		sts, err := s.states(ctx)
		if err == nil {
			pids := s.pidsByName()
			now := time.Since(since)
			last = last[:0]
			for _, st := range sts {
				if _, done := at[st.id]; done {
					continue
				}
				if why := s.problem(st, pids); why != "" {
					last = append(last, fmt.Sprintf("%s: %s", st.id, why))
				} else {
					at[st.id] = now
				}
			}
			if len(last) == 0 {
				return at, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return at, err
			}
			sort.Strings(last)
			return at, fmt.Errorf("%d projects not in their desired state after %s, e.g. %s", len(last), timeout, strings.Join(last[:min(5, len(last))], "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// check runs the end of the soak and records every violated invariant.
func (s *soak) check(ctx context.Context, lastFault time.Time) error {
	t0 := time.Now()
	r := &s.res
	r.lastFault = lastFault

	// 1. Convergence: every project running, as the database and the replicas say.
	if err := s.setAllRunning(ctx, time.Minute); err != nil {
		return err
	}
	at, err := s.waitConverged(ctx, s.o.convergeMax, lastFault)
	for _, d := range at {
		r.convergence = append(r.convergence, d)
	}
	r.unconverged = len(s.projects) - len(at)
	if err != nil {
		s.violation("convergence", "%v", err)
	}
	s.say("convergence: %d of %d projects within %s of the last fault (max %s)", len(at), len(s.projects), s.o.convergeMax, maxDuration(r.convergence).Round(time.Millisecond))

	// 2. A probe on every project: the newest version serves.
	if err := s.refreshVersions(ctx); err != nil {
		return err
	}
	s.probe(ctx)

	// 3. Every workload run completes with the result of its pinned version.
	s.waitRuns(ctx)

	// 4. Rows and leases, once the runs are done (still converged, nothing orphaned).
	s.checkRowsAndLeases(ctx)

	// 5. No two replicas polled one project at once beyond the bound.
	s.sampler.stop()
	r.overlaps = s.sampler.overlaps()
	for _, o := range r.overlaps {
		if o.d > pollOverlapBound {
			s.violation("double polling", "%s (bound %s)", o, pollOverlapBound)
		}
	}
	s.sampler.mu.Lock()
	for _, b := range s.sampler.rowBad {
		s.violation("double polling", "two replicas' rows live at once: %s", b)
	}
	s.sampler.mu.Unlock()

	// 6. The replicas' logs.
	s.scanLogs()
	r.checkTook = time.Since(t0)
	return nil
}

// probe starts one quick run on every project and waits for each result, which must
// be the newest version.
func (s *soak) probe(ctx context.Context) {
	r := &s.res
	var probes []*wfRun
	for _, p := range s.projects {
		w := &wfRun{id: fmt.Sprintf("probe-%d-%d", s.o.seed, p.i), p: p, kind: kindProbe, sleep: 100 * time.Millisecond, at: time.Now(), atVer: p.latest()}
		probes = append(probes, w)
	}
	refused := &atomic.Int64{}
	t0 := time.Now()
	// Eight at a time: a burst of hundreds of starts, each retried when it times out,
	// can keep a dev server's single database writer saturated.
	parallel(probes, func(w *wfRun) { s.startWorkflow(ctx, w, refused, 3*time.Minute) })
	s.say("probes started in %s", time.Since(t0).Round(time.Millisecond))
	r.probes = len(probes)
	deadline := time.Now().Add(max(3*time.Minute, time.Duration(len(probes))*time.Second)) // generous: the machine may be loaded by others
	for _, w := range probes {
		if !w.started.Load() {
			// Starting a run does not involve the service: Temporal did not answer.
			s.violation("harness", "project %s: Temporal did not take the probe's start within 3 minutes (%d attempts): %s", w.p.id, w.attempt, w.lastErr)
			continue
		}
		cctx, cancel := context.WithDeadline(ctx, deadline)
		var out string
		err := s.tc.GetWorkflow(cctx, w.id, w.runID.Load().(string)).Get(cctx, &out)
		cancel()
		want := fmt.Sprintf("%d-%d", w.atVer, w.atVer)
		switch {
		case err != nil:
			s.violation("probe", "project %s: probe run %s: %v", w.p.id, w.id, err)
		case out != want:
			s.violation("probe", "project %s: probe run %s returned %q, want %q (the newest version)", w.p.id, w.id, out, want)
		default:
			r.probesOK++
		}
		// How long it took, by Temporal's clock.
		cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		d, err := s.tc.DescribeWorkflowExecution(cctx, w.id, w.runID.Load().(string))
		cancel()
		if err == nil && d.GetWorkflowExecutionInfo().GetCloseTime() != nil {
			info := d.GetWorkflowExecutionInfo()
			took := info.GetCloseTime().AsTime().Sub(info.GetStartTime().AsTime())
			r.probeLatency = append(r.probeLatency, took)
			if took > 10*time.Second {
				s.say("probe on project %s (%s) took %s: %s", w.p.id, w.p.queue, took.Round(time.Millisecond), s.historyOf(ctx, w))
			}
		}
	}
	s.say("probes: %d of %d projects ran the newest version", r.probesOK, r.probes)
}

// waitRuns signals the runs still waiting, waits for every workload run to close and
// classifies each.
func (s *soak) waitRuns(ctx context.Context) {
	r := &s.res
	s.wl.stop() // every start answered (or given up)
	runs := s.wl.all()
	r.byStatus, r.byKind, r.byLanguage = map[string]int{}, map[string]int{}, map[string]int{}
	// Runs whose start was never acknowledged: does Temporal have them after all? Only
	// NotFound says no; any other answer is asked again.
	parallel(runs, func(w *wfRun) {
		if w.started.Load() {
			return
		}
		for attempt := 0; ; attempt++ {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			d, err := s.tc.DescribeWorkflowExecution(cctx, w.id, "")
			cancel()
			var nf *serviceerror.NotFound
			switch {
			case err == nil:
				w.runID.Store(d.GetWorkflowExecutionInfo().GetExecution().GetRunId())
				w.started.Store(true)
				return
			case errors.As(err, &nf):
				return
			case attempt == 5 || ctx.Err() != nil:
				s.violation("harness", "run %s: cannot tell whether Temporal has it: %v", w.id, err)
				return
			}
			time.Sleep(time.Second)
		}
	})
	for _, w := range runs {
		if w.kind == kindWait && w.started.Load() && !w.sigSent.Load() {
			if err := s.signal(ctx, w, time.Minute); err != nil {
				s.violation("harness", "run %s: Temporal did not take its signal within a minute: %v", w.id, err)
			}
			w.sigSent.Store(true)
		}
	}
	deadline := time.Now().Add(s.o.settle)
	pending := 0
	for {
		var open atomic.Int64
		parallel(runs, func(w *wfRun) {
			if !w.started.Load() || (w.status != "" && w.status != "Running") {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			d, err := s.tc.DescribeWorkflowExecution(cctx, w.id, w.runID.Load().(string))
			cancel()
			if err != nil {
				var nf *serviceerror.NotFound
				if errors.As(err, &nf) {
					w.status, w.err = "NotFound", err.Error()
					return
				}
				open.Add(1)
				return
			}
			w.status = statusName(d.GetWorkflowExecutionInfo().GetStatus())
			if w.status == "Running" {
				open.Add(1)
			}
		})
		pending = int(open.Load())
		if pending == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		s.say("%d workload runs still open", pending)
		time.Sleep(2 * time.Second)
	}
	parallel(runs, func(w *wfRun) {
		if w.started.Load() && w.status == "Completed" {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var out string
			err := s.tc.GetWorkflow(cctx, w.id, w.runID.Load().(string)).Get(cctx, &out)
			cancel()
			if err != nil {
				w.err = err.Error()
			}
			w.result = out
		}
	})
	for _, w := range runs {
		r.byKind[w.kind]++
		r.byLanguage[w.p.language]++
		if !w.started.Load() {
			r.neverStarted++
			continue
		}
		r.started++
		s.classify(w)
	}
	s.checkExecutions(ctx, runs)
	s.say("workload runs: %d started, %d completed, %d failed, %d lost, %d wrong version, %d duplicated",
		r.started, r.completed, r.failed, r.lost, r.wrongVersion, r.duplicated)
}

// classify records one run's outcome against the invariant: completed with "n-n",
// n a version of its project that existed by its end.
func (s *soak) classify(w *wfRun) {
	r := &s.res
	r.byStatus[w.status]++
	switch w.status {
	case "Completed":
		a, b, ok := parseResult(w.result)
		switch {
		case w.err != "":
			r.lost++
			s.violation("workflows", "run %s completed but its result cannot be read: %s", w.id, w.err)
		case !ok || a != b:
			r.wrongVersion++
			s.violation("pinned version", "run %s (%s, project %s) returned %q: it switched versions mid-run", w.id, w.kind, w.p.id, w.result)
		case a < 1 || a > w.p.latest():
			r.wrongVersion++
			s.violation("pinned version", "run %s (project %s) returned %q: version %d was never compiled (newest %d)", w.id, w.p.id, w.result, a, w.p.latest())
		default:
			r.completed++
			if a < w.atVer {
				r.olderPinned++
			}
		}
	case "Running", "":
		r.lost++
		s.violation("workflows", "run %s (%s, project %s, started %s) still not closed %s after the faults",
			w.id, w.kind, w.p.id, w.at.Format("15:04:05.000"), time.Since(r.lastFault).Round(time.Second))
	case "NotFound":
		r.lost++
		s.violation("workflows", "run %s (%s, project %s) was started but Temporal does not know it: %s", w.id, w.kind, w.p.id, w.err)
	default:
		r.failed++
		s.violation("workflows", "run %s (%s, project %s) ended %s", w.id, w.kind, w.p.id, w.status)
	}
}

// checkExecutions lists every execution Temporal has: one per workflow id the harness
// started, and no other.
func (s *soak) checkExecutions(ctx context.Context, runs []*wfRun) {
	r := &s.res
	known := map[string]*wfRun{}
	for _, w := range runs {
		known[w.id] = w
	}
	count := map[string]int{}
	var token []byte
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := s.tc.ListWorkflow(cctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: "default", PageSize: 1000, NextPageToken: token})
		cancel()
		if err != nil {
			s.violation("harness", "list executions: %v", err)
			return
		}
		for _, e := range resp.GetExecutions() {
			id := e.GetExecution().GetWorkflowId()
			if strings.HasPrefix(id, "probe-") {
				continue
			}
			count[id]++
			r.executions++
			w := known[id]
			switch {
			case w == nil:
				s.violation("workflows", "execution %s (run %s) was never started by the workload", id, e.GetExecution().GetRunId())
			case w.started.Load() && w.runID.Load().(string) != e.GetExecution().GetRunId():
				r.duplicated++
				s.violation("workflows", "run %s has a second execution %s (%s)", id, e.GetExecution().GetRunId(), statusName(e.GetStatus()))
			}
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	for id, w := range known {
		if w.started.Load() && count[id] == 0 {
			s.violation("workflows", "run %s is not listed by Temporal", id)
		}
	}
}

// checkRowsAndLeases: no live row without a live replica process, and every running
// project has exactly one live row, on the lease owner, with the lease's term.
func (s *soak) checkRowsAndLeases(ctx context.Context) {
	r := &s.res
	deadline := time.Now().Add(30 * time.Second)
	for {
		sts, err := s.states(ctx)
		var orphans, leases []string
		if err == nil {
			pids := s.pidsByName()
			live, err2 := s.liveRows(ctx)
			err = err2
			for _, row := range live {
				if pids[row[0]] == "" || pids[row[0]] != row[1] {
					orphans = append(orphans, fmt.Sprintf("worker %s of project %s is %s on %s (process %s), which does not run (now %v)", row[2], row[3], row[4], row[0], row[1], pids))
				}
			}
			for _, st := range sts {
				if why := s.problem(st, pids); why != "" {
					leases = append(leases, fmt.Sprintf("project %s: %s", st.id, why))
				}
			}
		}
		if err == nil && len(orphans) == 0 && len(leases) == 0 {
			s.say("rows and leases consistent: one live row per project, on the lease owner, with its term")
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				s.violation("harness", "read rows and leases: %v", err)
			}
			r.liveOrphans, r.leaseProblems = len(orphans), len(leases)
			for _, o := range orphans {
				s.violation("no live row without a live replica", "%s", o)
			}
			for _, l := range leases {
				s.violation("leases consistent", "%s", l)
			}
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// liveRows are the rows starting, running or stopping: replica, process, worker,
// project, status.
func (s *soak) liveRows(ctx context.Context) ([][5]string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := s.pool.Query(cctx, `
		SELECT coalesce(replica_id, ''), coalesce(process_id, ''), worker_id, project_id::text, status
		FROM workflow_workers WHERE status IN ('starting', 'running', 'stopping')`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][5]string
	for rows.Next() {
		var x [5]string
		if err := rows.Scan(&x[0], &x[1], &x[2], &x[3], &x[4]); err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

func statusName(st enumspb.WorkflowExecutionStatus) string {
	return st.String() // Running, Completed, Failed, ...
}

// historyOf summarizes a run's history: each event's type, time (from the first) and
// the identity that took or completed a task.
func (s *soak) historyOf(ctx context.Context, w *wfRun) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	it := s.tc.GetWorkflowHistory(cctx, w.id, w.runID.Load().(string), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var parts []string
	var first time.Time
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			parts = append(parts, err.Error())
			break
		}
		at := e.GetEventTime().AsTime()
		if first.IsZero() {
			first = at
		}
		part := fmt.Sprintf("+%s %s", at.Sub(first).Round(time.Millisecond), strings.TrimPrefix(e.GetEventType().String(), "EVENT_TYPE_"))
		if a := e.GetWorkflowTaskStartedEventAttributes(); a != nil {
			part += " by " + a.GetIdentity()
		}
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil {
			part += " by " + a.GetIdentity()
		}
		if a := e.GetWorkflowTaskTimedOutEventAttributes(); a != nil {
			part += " " + a.GetTimeoutType().String()
		}
		if a := e.GetWorkflowTaskScheduledEventAttributes(); a != nil && a.GetTaskQueue().GetKind() == 2 {
			part += " (sticky)"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

// parallel runs fn on every run, eight at a time.
func parallel(runs []*wfRun, fn func(*wfRun)) {
	ch := make(chan *wfRun)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range ch {
				fn(w)
			}
		}()
	}
	for _, w := range runs {
		ch <- w
	}
	close(ch)
	wg.Wait()
}
