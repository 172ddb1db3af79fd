package main

// The workload: what the builder app and its users do while the nemesis works. It
// keeps starting workflow runs (some finish at once, some sleep, some wait for a
// signal, so that runs span faults), compiling new versions, flipping desired_status
// and restarting projects (restart_project_worker). Everything it does is retried
// or counted as refused while PostgreSQL or Temporal is down.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/fixture"
)

// workflowName is the one workflow of every project.
const workflowName = "soak"

// definition is version n of the workflow. Its first activity returns n and its return
// node joins that output with the literal n, so a run's result "n-n" proves which
// version ran it and that it did not switch versions between its first activity and
// its end ("n-m" would). Then it sleeps (input.sleep) or waits for the signal "go"
// (input.wait), so that runs span faults. The activity retries without limit, each
// attempt bounded by 10 s, so an attempt lost with a killed or paused replica is
// retried elsewhere instead of failing the run.
func definition(n int) string {
	return fmt.Sprintf(`{"version": 1, "start": "a", "nodes": {
	"a": {"type": "activity", "activity": "echo", "input": %d, "timeout": "10s",
	      "retry": {"maximum_attempts": 0, "initial_interval": "500ms", "maximum_interval": "5s"}, "next": "k"},
	"k": {"type": "condition", "if": "input.wait == true", "then": "w", "else": "s"},
	"w": {"type": "wait_signal", "signal": "go", "next": "r"},
	"s": {"type": "sleep", "duration": "${input.sleep}", "next": "r"},
	"r": {"type": "return", "value": "${nodes.a.output}-%d"}}}`, n, n)
}

// moduleDefinition is version n of the workflow of the projects written in
// TypeScript (every other one): the same steps, and the same result "n-n".
func moduleDefinition(n int) string {
	return fmt.Sprintf(`import { proxyActivities, sleep, condition, defineSignal, setHandler } from '@temporalio/workflow';

const { echo } = proxyActivities<{ echo(n: number): Promise<number> }>({
  startToCloseTimeout: '10s',
  retry: { maximumAttempts: 0, initialInterval: '500ms', maximumInterval: '5s' },
});
const go = defineSignal('go');

export default async function soak(input: { wait: boolean; sleep: string }): Promise<string> {
  let signalled = false;
  setHandler(go, () => { signalled = true; });
  const a = await echo(%d);
  if (input.wait) {
    await condition(() => signalled);
  } else {
    await sleep(input.sleep);
  }
  return `+"`${a}-%d`"+`;
}
`, n, n)
}

// code is version n of p's workflow, in p's language.
func (p *project) code(n int) string {
	if p.language == "typescript" {
		return moduleDefinition(n)
	}
	return definition(n)
}

// project is one of the soak's projects, with the newest version the harness knows
// committed.
type project struct {
	i        int
	id       uuid.UUID
	queue    string
	workflow uuid.UUID
	language string // of its workflow: json, or typescript for every other project

	mu      sync.Mutex
	version int
}

func (p *project) latest() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.version
}

func (s *soak) createProjects(ctx context.Context) error {
	ps, err := fixture.NewProjects(ctx, s.pool, "soak", s.o.projects)
	if err != nil {
		return err
	}
	for i, p := range ps {
		s.projects = append(s.projects, &project{i: i, id: p.ID, queue: p.TaskQueue, language: []string{"json", "typescript"}[i%2], version: 1})
	}
	for _, language := range []string{"json", "typescript"} {
		var ids []uuid.UUID
		var of []*project
		for _, p := range s.projects {
			if p.language == language {
				ids, of = append(ids, p.id), append(of, p)
			}
		}
		if len(of) == 0 {
			continue
		}
		wfs, err := fixture.NewWorkflowIn(ctx, s.pool, workflowName, language, of[0].code(1), ids...)
		if err != nil {
			return err
		}
		for i, p := range of {
			p.workflow = wfs[i]
		}
	}
	return nil
}

// run kinds.
const (
	kindQuick = "quick" // a 100 ms sleep
	kindSleep = "sleep" // a sleep of seconds, spanning faults
	kindWait  = "wait"  // waits for a signal sent seconds later
	kindProbe = "probe" // one per project after the faults: the newest version must serve
)

// wfRun is one workflow run the harness started (or tried to).
type wfRun struct {
	id      string
	p       *project
	kind    string
	sleep   time.Duration
	at      time.Time // the start was asked
	atVer   int       // the newest version the harness knew committed then
	signal  time.Time // kindWait: when to send the signal
	started atomic.Bool
	runID   atomic.Value // string
	sigSent atomic.Bool
	attempt int // start requests sent
	lastErr string

	// the outcome (check)
	status string
	result string
	err    string
}

// workload drives the builder app's side.
type workload struct {
	s      *soak
	rng    *rand.Rand
	ctx    context.Context // ends at stop
	cancel context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup // starts and signals in flight
	writes sync.WaitGroup // compiles, flips and restarts in flight

	mu   sync.Mutex
	runs []*wfRun
	seq  int

	compiles, compilesRefused atomic.Int64
	flips, flipsRefused       atomic.Int64
	restarts, restartsRefused atomic.Int64
	startsRefused             atomic.Int64 // start requests Temporal refused (retried)
	signalsRefused            atomic.Int64
	stopOnce                  sync.Once
}

func startWorkload(parent context.Context, s *soak) *workload {
	ctx, cancel := context.WithCancel(parent)
	w := &workload{s: s, rng: s.rngFor(2), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go w.loop(ctx)
	return w
}

func (w *workload) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.runs)
}

func (w *workload) all() []*wfRun {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*wfRun(nil), w.runs...)
}

// halt ends the loop and waits for the database writes in flight (a flip waiting to
// set its project running again gives up: the end sets every project running).
func (w *workload) halt() {
	w.stopOnce.Do(func() {
		w.cancel()
		<-w.done
		w.writes.Wait()
	})
}

// stop halts and waits for the starts and signals in flight (a start is retried until
// Temporal answers it or a minute passed).
func (w *workload) stop() {
	w.halt()
	w.wg.Wait()
}

// loop ticks every 100 ms and draws what to do at the configured rates.
func (w *workload) loop(ctx context.Context) {
	defer close(w.done)
	const tick = 100 * time.Millisecond
	per := tick.Seconds()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Poisson-ish: the expected number of events per tick is rate * tick.
		for n := w.events(w.s.o.rate * per); n > 0; n-- {
			w.startRun(ctx)
		}
		// Writes go to PostgreSQL in goroutines of their own: an outage must not stall
		// the starts (Temporal does not need PostgreSQL).
		if w.rng.Float64() < 0.5*per {
			w.async(w.pick(), 0, w.compile)
		}
		if w.rng.Float64() < 0.25*per {
			w.async(w.pick(), time.Duration(2000+w.rng.IntN(13000))*time.Millisecond, w.flip)
		}
		if w.rng.Float64() < 0.25*per {
			w.async(w.pick(), 0, w.restart)
		}
		w.signalDue(ctx)
	}
}

func (w *workload) events(expected float64) int {
	n := int(expected)
	if w.rng.Float64() < expected-float64(n) {
		n++
	}
	return n
}

func (w *workload) pick() *project { return w.s.projects[w.rng.IntN(len(w.s.projects))] }

// async runs one of the builder app's writes on p in a goroutine the stop waits for.
func (w *workload) async(p *project, d time.Duration, f func(ctx context.Context, p *project, d time.Duration)) {
	w.writes.Add(1)
	go func() {
		defer w.writes.Done()
		f(context.WithoutCancel(w.ctx), p, d)
	}()
}

// startRun starts one run of a random kind on a random project.
func (w *workload) startRun(ctx context.Context) {
	p := w.pick()
	r := &wfRun{p: p, at: time.Now(), atVer: p.latest()}
	switch x := w.rng.Float64(); {
	case x < 0.5:
		r.kind, r.sleep = kindQuick, 100*time.Millisecond
	case x < 0.8:
		r.kind, r.sleep = kindSleep, time.Duration(2+w.rng.IntN(19))*time.Second
	default:
		r.kind, r.signal = kindWait, time.Now().Add(time.Duration(3+w.rng.IntN(28))*time.Second)
	}
	w.mu.Lock()
	w.seq++
	r.id = fmt.Sprintf("soak-%d-%06d", w.s.o.seed, w.seq)
	w.runs = append(w.runs, r)
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.s.startWorkflow(context.WithoutCancel(ctx), r, &w.startsRefused, time.Minute)
	}()
}

// startWorkflow sends the start until Temporal answers it (within timeout): an
// ambiguous failure is retried with the same workflow id, and "already started" means
// an earlier attempt got through.
func (s *soak) startWorkflow(ctx context.Context, r *wfRun, refused *atomic.Int64, timeout time.Duration) {
	input := map[string]any{"wait": r.kind == kindWait, "sleep": r.sleep.String(), "id": r.id}
	deadline := time.Now().Add(timeout)
	for {
		r.attempt++
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		run, err := s.tc.ExecuteWorkflow(cctx, client.StartWorkflowOptions{
			ID: r.id, TaskQueue: r.p.queue,
			WorkflowExecutionErrorWhenAlreadyStarted: true,
		}, workflowName, input)
		cancel()
		if err == nil {
			r.runID.Store(run.GetRunID())
			r.started.Store(true)
			return
		}
		var already *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &already) {
			r.runID.Store(already.RunId)
			r.started.Store(true)
			return
		}
		refused.Add(1)
		r.lastErr = err.Error()
		if time.Now().After(deadline) || ctx.Err() != nil {
			return // check() asks Temporal whether it exists after all
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// signalDue sends "go" to the waiting runs whose time has come.
func (w *workload) signalDue(ctx context.Context) {
	now := time.Now()
	for _, r := range w.all() {
		if r.kind != kindWait || r.sigSent.Load() || !r.started.Load() || now.Before(r.signal) {
			continue
		}
		r.sigSent.Store(true)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			if err := w.s.signal(context.WithoutCancel(ctx), r, 30*time.Second); err != nil {
				w.signalsRefused.Add(1)
				r.sigSent.Store(false) // the check sends it again
			}
		}()
	}
}

// signal sends "go" to r until Temporal takes it or timeout passes.
func (s *soak) signal(ctx context.Context, r *wfRun, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.tc.SignalWorkflow(cctx, r.id, "", "go", "ok")
		cancel()
		if err == nil {
			return nil
		}
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) && strings.Contains(err.Error(), "completed") {
			return nil // it ended: the check says how
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// compile stores the next version of p's workflow.
func (w *workload) compile(ctx context.Context, p *project, _ time.Duration) {
	next := p.latest() + 1
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The version is named: a compile whose answer was lost but which committed makes
	// the retry fail (versions must increase), and refreshVersions reads the truth.
	_, err := w.s.pool.Exec(cctx, `INSERT INTO compiled_workflows (workflow_id, version, language, workflow_code) VALUES ($1, $2, $3, $4)`,
		p.workflow, next, p.language, p.code(next))
	if err != nil {
		w.compilesRefused.Add(1)
		return
	}
	p.mu.Lock()
	p.version = max(p.version, next)
	p.mu.Unlock()
	w.compiles.Add(1)
}

// flip stops p for off (2-15 s), then sets it running again.
func (w *workload) flip(ctx context.Context, p *project, off time.Duration) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := fixture.SetDesired(cctx, w.s.pool, "stopped", p.id)
	cancel()
	if err != nil {
		w.flipsRefused.Add(1)
		return
	}
	w.flips.Add(1)
	select {
	case <-w.ctx.Done():
		return // the end sets every project running
	case <-time.After(off):
	}
	for w.ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := fixture.SetDesired(cctx, w.s.pool, "running", p.id)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// restart calls restart_project_worker on p (which also sets it running).
func (w *workload) restart(ctx context.Context, p *project, _ time.Duration) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := w.s.pool.Exec(cctx, `SELECT restart_project_worker($1)`, p.id); err != nil {
		w.restartsRefused.Add(1)
		return
	}
	w.restarts.Add(1)
}

// refreshVersions reads every project's newest compiled version from the database (a
// compile whose answer was lost may have committed).
func (s *soak) refreshVersions(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `SELECT workflow_id, max(version) FROM compiled_workflows GROUP BY workflow_id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	byWF := map[uuid.UUID]int{}
	for rows.Next() {
		var id uuid.UUID
		var v int
		if err := rows.Scan(&id, &v); err != nil {
			return err
		}
		byWF[id] = v
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, p := range s.projects {
		p.mu.Lock()
		p.version = byWF[p.workflow]
		p.mu.Unlock()
	}
	return nil
}

// parseResult splits a result "a-b" into its two versions.
func parseResult(s string) (a, b int, ok bool) {
	x, y, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	a, err1 := strconv.Atoi(x)
	b, err2 := strconv.Atoi(y)
	return a, b, err1 == nil && err2 == nil
}
