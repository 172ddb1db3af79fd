package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler/flow"
	"github.com/flowbuilder/reconciler/reconciler/script"
)

// checker gives every compiled version its validation result in
// compiled_workflow_checks (compile feedback, SPEC section 3), whether or not its
// project runs: the compile's trigger notifies the compiled id ("compiled:<id>"), and
// every replica checks it with the code the workers run; the first result written
// wins. A sweep at start-up, after every (re)connect of the listener and every
// interval checks what was compiled while no replica listened.
type checker struct {
	db       *db.Store
	replica  string
	interval time.Duration
	log      *slog.Logger
	latency  prometheus.Observer // from the compile's commit to its result written
	scripts  *script.Cache       // the workers' compiled modules: a version checked is not compiled again

	mu      sync.Mutex
	queued  map[uuid.UUID]bool
	ids     chan uuid.UUID
	sweep   chan struct{} // wakes the sweep before its interval
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped sync.Once
}

// checkWorkers check versions in parallel: a compile storm is checked in parallel.
const checkWorkers = 2

func newChecker(store *db.Store, replica string, interval time.Duration, log *slog.Logger, latency prometheus.Observer, scripts *script.Cache) *checker {
	return &checker{db: store, replica: replica, interval: interval, log: log, latency: latency, scripts: scripts,
		queued: map[uuid.UUID]bool{}, ids: make(chan uuid.UUID, 4096), sweep: make(chan struct{}, 1)}
}

// Start runs the workers and the sweep until Stop.
func (c *checker) Start(ctx context.Context) error {
	ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for range checkWorkers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.work(ctx)
		}()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.sweepLoop(ctx)
	}()
	return nil
}

// Stop ends the workers and the sweep; idempotent.
func (c *checker) Stop() {
	c.stopped.Do(func() {
		if c.cancel != nil {
			c.cancel()
			c.wg.Wait()
		}
	})
}

// Check queues a compiled version for checking (at most once while it waits).
func (c *checker) Check(id uuid.UUID) {
	c.mu.Lock()
	if c.queued[id] {
		c.mu.Unlock()
		return
	}
	c.queued[id] = true
	c.mu.Unlock()
	select {
	case c.ids <- id:
	default:
		// Full: the sweep finds it.
		c.mu.Lock()
		delete(c.queued, id)
		c.mu.Unlock()
	}
}

// Sweep asks for a sweep now: the listener has just (re)connected, and what was
// compiled while it did not listen was not notified to it.
func (c *checker) Sweep() {
	select {
	case c.sweep <- struct{}{}:
	default:
	}
}

func (c *checker) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-c.ids:
			c.mu.Lock()
			delete(c.queued, id)
			c.mu.Unlock()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := c.check(cctx, id); err != nil && ctx.Err() == nil {
				c.log.Warn("compile check failed; the sweep retries", "compiled_workflow_id", id, "error", err)
			}
			cancel()
		}
	}
}

func (c *checker) sweepLoop(ctx context.Context) {
	for {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ids, err := c.db.UncheckedCompiled(sctx, 1000)
		cancel()
		if err != nil && ctx.Err() == nil {
			c.log.Warn("compile check sweep failed", "error", err)
		}
		for _, id := range ids {
			c.Check(id)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.sweep:
		case <-time.After(jitter(c.interval)):
		}
	}
}

// problem is one entry of compiled_workflow_checks.problems.
type problem struct {
	Node    *string `json:"node"`
	Field   *string `json:"field"`
	Message string  `json:"message"`
	Kind    string  `json:"kind,omitempty"` // flow.ProblemKind, for JSON definitions
	Line    *int    `json:"line,omitempty"`
	Column  *int    `json:"column,omitempty"`
}

// check validates one compiled version and writes its result.
func (c *checker) check(ctx context.Context, id uuid.UUID) error {
	v, err := c.db.LoadCompiledForCheck(ctx, id)
	if errors.Is(err, db.ErrNotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("load compiled version %s: %w", id, err)
	}
	var problems []problem
	if script.Is(v.Language) {
		_, ps := c.scripts.Get(id.String(), v.WorkflowCode, v.Language)
		problems = moduleProblems(ps)
	} else {
		problems = checkDefinition(v.WorkflowCode, v.Components, v.Workflows)
	}
	raw, err := json.Marshal(problems)
	if err != nil {
		return err
	}
	if err := c.db.InsertCheck(ctx, db.InsertCheckParams{
		CompiledWorkflowID: id, Valid: len(problems) == 0, Problems: raw, CheckedBy: c.replica,
	}); err != nil {
		return fmt.Errorf("write the check of compiled version %s: %w", id, err)
	}
	c.latency.Observe(time.Since(v.CreatedAt).Seconds())
	return nil
}

// moduleProblems are a TypeScript or JavaScript module's problems as check problems,
// with the line and column the builder shows them at.
func moduleProblems(ps script.Problems) []problem {
	out := make([]problem, 0, len(ps))
	for _, sp := range ps {
		p := problem{Message: sp.Message}
		if sp.Line > 0 {
			line, column := sp.Line, sp.Column
			p.Line, p.Column = &line, &column
		}
		out = append(out, p)
	}
	return out
}

// checkDefinition validates a definition against a project's active components and
// workflows exactly as a worker does when it loads it.
func checkDefinition(code string, components, workflows []string) []problem {
	activities := append(slices.Collect(maps.Keys(builtinActivities)), components...)
	_, err := flow.Parse([]byte(code), catalog(activities, workflows))
	if err == nil {
		return []problem{}
	}
	var ve *flow.ValidationError
	if !errors.As(err, &ve) {
		return []problem{{Message: err.Error()}}
	}
	out := make([]problem, 0, len(ve.Problems))
	for _, vp := range ve.Problems {
		p := problem{Message: vp.String(), Kind: string(vp.Kind)}
		if vp.Node != "" {
			p.Node = &vp.Node
		}
		if vp.Field != "" {
			p.Field = &vp.Field
		}
		out = append(out, p)
	}
	return out
}
