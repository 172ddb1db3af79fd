package flow

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// StateQuery is the Temporal query every run answers with its State.
const StateQuery = "state"

// ChangeID is the workflow.GetVersion change of the extended format (SPEC "4,
// continued"). Runs recorded before it (DefaultVersion) keep the behaviour they were
// recorded with, wherever the extension changed the commands of a definition that uses
// none of the additions or the values that feed them: the default retry, the input of
// a run started without argument or with several, signals.<name> (last received, not
// last consumed), the step limit (per run, not per path), failure messages, payload
// checks. New runs record version 1.
const ChangeID = "flow-format-extended"

const extendedVersion workflow.Version = 1

// Extended reports whether the run follows the extended format's behaviour (every run
// started since; false when replaying a run recorded before).
func Extended(ctx workflow.Context) bool {
	return workflow.GetVersion(ctx, ChangeID, workflow.DefaultVersion, extendedVersion) >= extendedVersion
}

// State is the answer to the state query: the nodes run so far, in order (a node in a
// loop appears once per execution), and the last output of each.
type State struct {
	Executed []string             `json:"executed"`
	Nodes    map[string]NodeState `json:"nodes"`
	Signals  map[string]any       `json:"signals"`
	Steps    int                  `json:"steps"`
	Done     bool                 `json:"done"`
	Pinned   map[string]any       `json:"pinned,omitempty"`
}

// NodeState is one node's entry in State.
type NodeState struct {
	Output any `json:"output"`
	Error  any `json:"error,omitempty"`
}

// Options are fixed for a run when it starts.
type Options struct {
	// MaxSteps ends a run with a StepLimitExceeded failure when one path (the main
	// path, a parallel branch, a foreach iteration) executes more nodes than that in
	// one run; it stops loops that never end. (Runs recorded before the extended format
	// count the nodes of the whole run.)
	MaxSteps int
	// Pinned is echoed in the state query (which compiled version the run uses).
	Pinned map[string]any
	// Pin is what a run continued as new must pin (the compiled version's id): it is
	// carried to the new run in Continued.Pin.
	Pin string
	// Continued is what the run that continued as new into this one carried (nil for a
	// run started by a client).
	Continued *Continued
	// ExprLimits bound each evaluation of a template or condition (zero fields take
	// DefaultLimits); reaching one fails the run with an ExpressionError.
	ExprLimits Limits
	// TaskSteps bounds the expression steps a run may spend without waiting for
	// anything (an activity, a timer, a signal, a child): the work of one workflow task,
	// which must end well within Temporal's 1 s deadlock detector however many nodes
	// loop without waiting. 0 takes DefaultTaskSteps.
	TaskSteps int64
}

// DefaultTaskSteps is Options.TaskSteps by default: at most about 0.25 s of expression
// work per workflow task (25 ns per step at worst, measured).
const DefaultTaskSteps = 10_000_000

// ActivityHeartbeatTimeout is the heartbeat timeout of activities that may run long
// (all but instantActivities): they heartbeat every second, and a cancelled run's
// cancellation reaches them with the answer to one (the SDK sends at most one every
// 0.8 x this).
const ActivityHeartbeatTimeout = 5 * time.Second

// instantActivities answer at once and never heartbeat.
var instantActivities = map[string]bool{"echo": true, "log": true}

// Default retry of an activity node without "retry" (extended format).
const (
	DefaultMaximumAttempts = 3
	DefaultInitialInterval = time.Second
)

// Execute runs def with input as the current Temporal workflow and returns its result.
func Execute(ctx workflow.Context, def *Definition, input any, opts Options) (any, error) {
	info := workflow.GetInfo(ctx)
	r := &run{
		def:      def,
		opts:     opts,
		input:    input,
		extended: Extended(ctx),
		wfType:   info.WorkflowType.Name,
		main:     &frame{nodes: map[string]any{}},
		outputs:  map[string]any{},
		errors:   map[string]any{},
		signals:  map[string]any{},
		pending:  map[string][]queued{},
		visited:  map[string]bool{},
	}
	r.wf = map[string]any{
		"id":         info.WorkflowExecution.ID,
		"run_id":     info.WorkflowExecution.RunID,
		"type":       info.WorkflowType.Name,
		"attempt":    int(info.Attempt),
		"start_time": info.WorkflowStartTime.UTC().Format(time.RFC3339Nano),
	}
	if r.opts.TaskSteps <= 0 {
		r.opts.TaskSteps = DefaultTaskSteps
	}
	r.taskSteps = r.opts.TaskSteps
	start := def.Start
	var deadline time.Time
	if def.Timeout > 0 {
		deadline = workflow.Now(ctx).Add(def.Timeout)
	}
	if c := opts.Continued; c != nil && r.extended {
		at, dl, err := r.resume(c)
		if err != nil {
			return nil, err
		}
		if at != "" {
			start = at
		}
		if !dl.IsZero() && def.Timeout > 0 {
			deadline = dl
		}
	}
	r.deadline = deadline
	if err := workflow.SetQueryHandler(ctx, StateQuery, r.state); err != nil {
		return nil, fmt.Errorf("register state query: %w", err)
	}
	r.channels = make(map[string]workflow.ReceiveChannel, len(def.Signals))
	for _, name := range def.Signals {
		ch := workflow.GetSignalChannel(ctx, name)
		r.channels[name] = ch
		waited := def.Waits[name]
		workflow.Go(ctx, func(ctx workflow.Context) {
			for {
				var payload any
				ch.Receive(ctx, &payload)
				r.receive(name, payload, waited)
			}
		})
	}

	runCtx := ctx
	timedOut := false
	if !deadline.IsZero() {
		left := deadline.Sub(workflow.Now(ctx))
		if left <= 0 {
			return nil, r.timeoutError()
		}
		var cancel workflow.CancelFunc
		runCtx, cancel = workflow.WithCancel(ctx)
		workflow.Go(ctx, func(ctx workflow.Context) {
			if err := workflow.NewTimer(ctx, left).Get(ctx, nil); err == nil {
				timedOut = true
				cancel()
			}
		})
	}

	out, err := r.branch(runCtx, r.main, start, true)
	r.done = true
	var ret *returned
	if errors.As(err, &ret) {
		out, err = ret.value, nil
	}
	if timedOut && err != nil {
		return nil, r.timeoutError()
	}
	if err == nil && r.extended {
		if _, size, encErr := encode(out); encErr == nil && size > MaxPayload {
			return nil, tooLarge("the run's result", size)
		}
	}
	return out, err
}

type run struct {
	def      *Definition
	opts     Options
	input    any
	extended bool
	wfType   string
	wf       map[string]any // workflow.* in expressions
	deadline time.Time

	main     *frame
	outputs  map[string]any // the last output of each node, for the state query
	errors   map[string]any // the last caught failure of each node, for the state query
	executed []string
	signals  map[string]any // signals.<name>
	pending  map[string][]queued
	received int // signals queued so far: their order of arrival
	channels map[string]workflow.ReceiveChannel
	steps    int
	done     bool
	// taskSteps is what is left of TaskSteps until the run next waits.
	taskSteps int64

	// Continue-as-new: the nodes of the main path run so far in this run, and the
	// progress of the foreach the run resumes in.
	visited       map[string]bool
	resumeForeach *ForeachProgress
	resumeAt      string
}

// frame is what the nodes of one path see: the main path and parallel branches share
// the run's; each foreach iteration has its own, layered over its parent's when it
// starts, with its variables.
type frame struct {
	nodes map[string]any // id -> {"output": ..., "error": ...}, as expressions see it
	vars  map[string]any
}

func (f *frame) iteration(n *Node, item any, i int) *frame {
	vars := make(map[string]any, len(f.vars)+2)
	maps.Copy(vars, f.vars)
	vars[n.As] = item
	vars[n.Index] = i
	nodes := make(map[string]any, len(f.nodes)+4)
	maps.Copy(nodes, f.nodes)
	return &frame{nodes: nodes, vars: vars}
}

// queued is a signal received and not yet consumed.
type queued struct {
	seq     int
	payload any
}

// returned carries a return node's value up through branches.
type returned struct{ value any }

func (r *returned) Error() string { return "workflow returned" }

func (r *run) scope(f *frame) Scope {
	return Scope{Input: r.input, Nodes: f.nodes, Signals: r.signals, Workflow: r.wf, Loop: f.vars}
}

func (r *run) state() (State, error) {
	s := State{
		Executed: append([]string{}, r.executed...),
		Nodes:    make(map[string]NodeState, len(r.outputs)),
		Signals:  r.signals,
		Steps:    r.steps,
		Done:     r.done,
		Pinned:   r.opts.Pinned,
	}
	for id, out := range r.outputs {
		s.Nodes[id] = NodeState{Output: out, Error: r.errors[id]}
	}
	return s, nil
}

// receive queues a signal. Since the extended format, signals.<name> is the payload
// last consumed (by a wait_signal); a signal no node waits for is consumed when it
// arrives. Runs recorded before see the payload last received.
func (r *run) receive(name string, payload any, waited bool) {
	if !r.extended {
		r.pending[name] = append(r.pending[name], queued{payload: payload})
		r.signals[name] = payload
		return
	}
	if !waited {
		r.signals[name] = payload
		return
	}
	r.received++
	r.pending[name] = append(r.pending[name], queued{seq: r.received, payload: payload})
}

// take consumes the oldest signal of that name.
func (r *run) take(name string) any {
	q := r.pending[name]
	payload := q[0].payload
	r.pending[name] = q[1:]
	if r.extended {
		r.signals[name] = payload
	}
	return payload
}

// step is what running a node gave: its output, the node that comes next ("" ends the
// path) and the failure a catch routed (nil when none).
type step struct {
	out     any
	next    string
	failure any
}

// branch runs the nodes of one path from id until one has no successor and returns
// that node's output. main says it is the main path, where a loop back to a node run
// before continues the run as new when Temporal suggests it.
func (r *run) branch(ctx workflow.Context, f *frame, id string, main bool) (any, error) {
	var last any
	steps := 0
	for id != "" {
		if main && r.extended {
			if r.visited[id] && workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
				return nil, r.continueAsNew(ctx, r.input, func() *Continued { return r.carry(id, nil) })
			}
			r.visited[id] = true
		}
		if err := r.checkSteps(id, steps); err != nil {
			return nil, err
		}
		steps++
		r.steps++
		n := r.def.Nodes[id]
		if err := r.spend(n, nodeSteps); err != nil {
			return nil, err
		}
		s, err := r.exec(ctx, f, n, main)
		var ret *returned
		if err != nil && !errors.As(err, &ret) {
			return nil, err
		}
		entry := map[string]any{"output": s.out}
		if s.failure != nil {
			entry["error"] = s.failure
			r.errors[id] = s.failure
		} else {
			delete(r.errors, id)
		}
		f.nodes[id] = entry
		r.outputs[id] = s.out
		r.executed = append(r.executed, id)
		if err != nil {
			return nil, err
		}
		last = s.out
		id = s.next
	}
	return last, nil
}

func (r *run) checkSteps(id string, steps int) error {
	if r.opts.MaxSteps <= 0 {
		return nil
	}
	if !r.extended {
		if r.steps >= r.opts.MaxSteps {
			return temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("the run executed %d nodes without finishing (limit %d), the last at node %q: check the loop in the definition",
					r.steps, r.opts.MaxSteps, id), ErrStepLimit, nil)
		}
		return nil
	}
	if steps >= r.opts.MaxSteps {
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("a path of the run executed %d nodes without finishing (limit %d per path and run), the last at node %q: check the loop in the definition",
				steps, r.opts.MaxSteps, id), ErrStepLimit, nil)
	}
	return nil
}

// exec runs one node and says which node comes next.
func (r *run) exec(ctx workflow.Context, f *frame, n *Node, main bool) (step, error) {
	switch n.Type {
	case TypeActivity:
		input, err := r.eval(f, n, "input", n.Input)
		if err != nil {
			return step{}, err
		}
		arg, err := r.payload(n, "input", input)
		if err != nil {
			return step{}, err
		}
		ao := workflow.ActivityOptions{
			StartToCloseTimeout: n.Timeout,
			RetryPolicy:         r.retryPolicy(n.Retry),
		}
		if r.extended && !instantActivities[n.Activity] {
			// The activity heartbeats while it runs (http.request, components): the
			// answer to a heartbeat is how a cancelled run stops it.
			ao.HeartbeatTimeout = ActivityHeartbeatTimeout
		}
		actx := workflow.WithActivityOptions(ctx, ao)
		var out any
		err = workflow.ExecuteActivity(actx, n.Activity, arg).Get(actx, &out)
		r.waited()
		if err != nil {
			return r.caught(n, r.nodeFailed(n, FailureActivity, "activity "+n.Activity, err))
		}
		return step{out: out, next: n.Next}, nil

	case TypeCondition:
		b, err := r.boolean(f, n, "if", n.If)
		if err != nil {
			return step{}, err
		}
		if b {
			return step{out: true, next: n.Then}, nil
		}
		return step{out: false, next: n.Else}, nil

	case TypeSwitch:
		for i, c := range n.Cases {
			b, err := r.boolean(f, n, fmt.Sprintf("cases[%d].if", i), c.If)
			if err != nil {
				return step{}, err
			}
			if b {
				return step{out: i, next: c.Next}, nil
			}
		}
		return step{out: nil, next: n.Default}, nil

	case TypeSet:
		v, err := r.eval(f, n, "values", n.Values)
		if err != nil {
			return step{}, err
		}
		return step{out: v, next: n.Next}, nil

	case TypeSleep:
		var d time.Duration
		var err error
		if n.Until != nil {
			d, err = r.until(ctx, f, n)
		} else {
			d, err = r.duration(f, n, "duration", n.Duration)
		}
		if err != nil {
			return step{}, err
		}
		if err := workflow.Sleep(ctx, d); err != nil {
			return step{}, err
		}
		if d > 0 {
			r.waited()
		}
		return step{next: n.Next}, nil

	case TypeParallel:
		out, err := r.parallel(ctx, f, n)
		if err != nil {
			return r.caught(n, err)
		}
		return step{out: out, next: n.Next}, nil

	case TypeForeach:
		out, err := r.foreach(ctx, f, n, main)
		if err != nil {
			return r.caught(n, err)
		}
		return step{out: out, next: n.Next}, nil

	case TypeWaitSignal:
		return r.waitSignal(ctx, f, n)

	case TypeChildWorkflow:
		input, err := r.eval(f, n, "input", n.Input)
		if err != nil {
			return step{}, err
		}
		arg, err := r.payload(n, "input", input)
		if err != nil {
			return step{}, err
		}
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{})
		var out any
		err = workflow.ExecuteChildWorkflow(cctx, n.Workflow, arg).Get(cctx, &out)
		r.waited()
		if err != nil {
			return r.caught(n, r.nodeFailed(n, FailureChild, "child workflow "+n.Workflow, err))
		}
		return step{out: out, next: n.Next}, nil

	case TypeReturn:
		v, err := r.eval(f, n, "value", n.Value)
		if err != nil {
			return step{}, err
		}
		return step{out: v}, &returned{value: v}

	case TypeFail:
		v, err := r.eval(f, n, "message", n.Message)
		if err != nil {
			return step{}, err
		}
		return step{}, temporal.NewNonRetryableApplicationError(text(v), FailureWorkflow, nil)

	case TypeContinueAsNew:
		v, err := r.eval(f, n, "input", n.Input)
		if err != nil {
			return step{}, err
		}
		return step{}, r.continueAsNew(ctx, v, func() *Continued { return &Continued{Pin: r.opts.Pin, Signals: r.unconsumed()} })
	}
	return step{}, fmt.Errorf("node %q: unknown type %q", n.ID, n.Type)
}

// caught routes err to n's catch entry that matches it, or returns it.
func (r *run) caught(n *Node, err error) (step, error) {
	if c, ok := catchFor(n, err); ok {
		return step{next: c.Next, failure: failureValue(err)}, nil
	}
	return step{}, err
}

// waitSignal waits for a signal (or the first of "any"), or the timeout.
func (r *run) waitSignal(ctx workflow.Context, f *frame, n *Node) (step, error) {
	names := []string{n.Signal}
	nexts := []string{n.Next}
	if len(n.Any) > 0 {
		names, nexts = names[:0], nexts[:0]
		for _, route := range n.Any {
			names = append(names, route.Signal)
			nexts = append(nexts, route.Next)
		}
	}
	// first is the route whose oldest queued signal arrived first (-1: none).
	first := func() int {
		best := -1
		for i, name := range names {
			if q := r.pending[name]; len(q) > 0 && (best < 0 || q[0].seq < r.pending[names[best]][0].seq) {
				best = i
			}
		}
		return best
	}
	ready := func() bool { return first() >= 0 }
	if !ready() {
		defer r.waited() // it waits: a signal buffered already does not reset the budget
	}
	if n.WaitTimeout != nil {
		d, err := r.duration(f, n, "timeout", n.WaitTimeout)
		if err != nil {
			return step{}, err
		}
		ok, err := workflow.AwaitWithTimeout(ctx, d, ready)
		if err != nil {
			return step{}, err
		}
		if !ok {
			if n.OnTimeout != "" {
				return step{next: n.OnTimeout}, nil
			}
			return step{next: n.Next}, nil
		}
	} else if err := workflow.Await(ctx, ready); err != nil {
		return step{}, err
	}
	i := first()
	return step{out: r.take(names[i]), next: nexts[i]}, nil
}

// parallel runs each branch in its own coroutine. The first branch to fail or return
// cancels the others; otherwise the output is every branch's last output, in order.
func (r *run) parallel(ctx workflow.Context, f *frame, n *Node) (any, error) {
	bctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	results := make([]any, len(n.Branches))
	var first error
	finished := 0
	for i, start := range n.Branches {
		if err := r.spend(n, coroutineSteps); err != nil {
			return nil, err
		}
		workflow.Go(bctx, func(gctx workflow.Context) {
			out, err := r.branch(gctx, f, start, false)
			results[i] = out
			if err != nil && first == nil {
				first = err
				cancel()
			}
			finished++
		})
	}
	if err := workflow.Await(ctx, func() bool { return finished == len(n.Branches) }); err != nil {
		return nil, err
	}
	if first != nil {
		return nil, first
	}
	return results, nil
}

// foreach runs the body once per item, at most Concurrency iterations at a time, each
// in its own frame. The first iteration to fail or return cancels the others;
// otherwise the output is every iteration's last output, in item order. On the main
// path, when Temporal suggests it, the run continues as new between iterations: it
// stops starting iterations, waits for those running, and carries the items and the
// results so far to the new run, which goes on from there.
func (r *run) foreach(ctx workflow.Context, f *frame, n *Node, main bool) (any, error) {
	var items, results []any
	if p := r.resumeForeach; p != nil && main && r.resumeAt == n.ID {
		r.resumeForeach = nil
		items, results = p.Items, p.Results
	} else {
		v, err := r.eval(f, n, "items", n.Items)
		if err != nil {
			return nil, err
		}
		list, ok := v.([]any)
		if !ok {
			return nil, expressionError(n, "items", fmt.Errorf("gave %s, not an array", strconv.Quote(shorten(text(v)))))
		}
		items = list
	}
	begin := len(results)
	results = append(make([]any, 0, len(items)), results...)
	results = results[:len(items)]
	bctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	var first error
	running, next := 0, begin
	pause := false
	for next < len(items) {
		if err := workflow.Await(ctx, func() bool { return running < n.Concurrency || first != nil }); err != nil {
			return nil, err
		}
		if first != nil {
			break
		}
		if main && next > begin && workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			pause = true
			break
		}
		i := next
		next++
		running++
		iterate := func(gctx workflow.Context) {
			out, err := r.branch(gctx, f.iteration(n, items[i], i), n.Body, false)
			results[i] = out
			if err != nil && first == nil {
				first = err
				cancel()
			}
			running--
		}
		if n.Concurrency == 1 {
			iterate(bctx) // one at a time: no coroutine to start
			continue
		}
		if err := r.spend(n, coroutineSteps); err != nil {
			first = err
			running--
			break
		}
		workflow.Go(bctx, iterate)
	}
	if err := workflow.Await(ctx, func() bool { return running == 0 }); err != nil {
		return nil, err
	}
	if first != nil {
		return nil, first
	}
	if pause {
		return nil, r.continueAsNew(ctx, r.input, func() *Continued {
			return r.carry(n.ID, &ForeachProgress{Items: items, Results: results[:next]})
		})
	}
	return results, nil
}

func (r *run) eval(f *frame, n *Node, field string, t *Template) (any, error) {
	l, fromTask := r.limits()
	v, used, err := t.evalCounted(r.scope(f), l)
	r.taskSteps -= used
	if err != nil {
		return nil, expressionError(n, field, r.taskLimit(err, fromTask))
	}
	return v, nil
}

// boolean evaluates a condition that must be true or false.
func (r *run) boolean(f *frame, n *Node, field string, e *Expr) (bool, error) {
	l, fromTask := r.limits()
	v, used, err := e.evalCounted(r.scope(f), l)
	r.taskSteps -= used
	if err != nil {
		return false, expressionError(n, field, r.taskLimit(err, fromTask))
	}
	b, ok := v.(bool)
	if !ok {
		return false, expressionError(n, field, fmt.Errorf("%q gave %s, not a boolean", e, text(v)))
	}
	return b, nil
}

// limits are the limits of the next evaluation: ExprLimits, with no more steps than
// the workflow task has left (fromTask says the task's budget is the tighter).
func (r *run) limits() (Limits, bool) {
	l := r.opts.ExprLimits.withDefaults()
	if r.taskSteps < l.Steps {
		l.Steps = max(r.taskSteps, 1)
		return l, true
	}
	return l, false
}

// taskLimit names the workflow task's budget when it, not the evaluation's, ran out.
func (r *run) taskLimit(err error, fromTask bool) error {
	var le *LimitError
	if err != nil && fromTask && errors.As(err, &le) && le.Limit == "work" {
		return fmt.Errorf("%s: the run has done %d steps of expression work without waiting for an activity, a timer, a signal or a child, the most one workflow task may do (a loop of nodes that never waits)", le.Op, r.opts.TaskSteps)
	}
	return err
}

// The interpreter's own work, charged to the workflow task's budget like expression
// steps (25 ns each at worst): running a node (about 2.5 µs measured) and starting a
// coroutine for a parallel branch or a concurrent foreach iteration (about 5 µs more).
// A foreach of many items whose iterations never wait is bounded like a loop of nodes.
const (
	nodeSteps      = 100
	coroutineSteps = 200
)

// spend charges the interpreter's work at node n to the workflow task's budget (runs
// recorded before the extended format were not charged).
func (r *run) spend(n *Node, steps int64) error {
	if !r.extended {
		return nil
	}
	r.taskSteps -= steps
	if r.taskSteps >= 0 {
		return nil
	}
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("node %q: the run has done %d steps of work without waiting for an activity, a timer, a signal or a child, the most one workflow task may do (a loop of nodes, or a foreach of many items, that never waits: transform lists with expressions such as map and filter)", n.ID, r.opts.TaskSteps),
		FailureExpression, nil)
}

// waited resets the workflow task's budget: the run has waited for Temporal.
func (r *run) waited() { r.taskSteps = r.opts.TaskSteps }

// duration evaluates a duration field: a Go duration string, or a number of seconds.
func (r *run) duration(f *frame, n *Node, field string, t *Template) (time.Duration, error) {
	v, err := r.eval(f, n, field, t)
	if err != nil {
		return 0, err
	}
	switch v := v.(type) {
	case string:
		d, err := time.ParseDuration(v)
		if err == nil && d >= 0 {
			return d, nil
		}
	case float64:
		if v >= 0 {
			return time.Duration(v * float64(time.Second)), nil
		}
	case int:
		if v >= 0 {
			return time.Duration(v) * time.Second, nil
		}
	}
	return 0, expressionError(n, field, fmt.Errorf("%s is not a duration (like \"30s\") or a number of seconds", strconv.Quote(text(v))))
}

// until evaluates a sleep's "until" (an RFC 3339 time) into the time left until then
// (0 when it has passed).
func (r *run) until(ctx workflow.Context, f *frame, n *Node) (time.Duration, error) {
	v, err := r.eval(f, n, "until", n.Until)
	if err != nil {
		return 0, err
	}
	s, _ := v.(string)
	t, perr := time.Parse(time.RFC3339, s)
	if perr != nil {
		return 0, expressionError(n, "until", fmt.Errorf("%s is not an RFC 3339 time (like \"2030-01-02T15:04:05Z\")", strconv.Quote(shorten(text(v)))))
	}
	return max(t.Sub(workflow.Now(ctx)), 0), nil
}

func (r *run) timeoutError() error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("the run did not finish within the workflow's timeout (%s)", r.def.Timeout), FailureTimeout, nil)
}

// retryPolicy is an activity node's retry policy. Without "retry", the extended
// format makes at most DefaultMaximumAttempts attempts, DefaultInitialInterval apart,
// doubling; runs recorded before took Temporal's default (unlimited attempts).
func (r *run) retryPolicy(p *RetryPolicy) *temporal.RetryPolicy {
	if p == nil {
		if !r.extended {
			return nil
		}
		return &temporal.RetryPolicy{
			InitialInterval:    DefaultInitialInterval,
			BackoffCoefficient: 2,
			MaximumAttempts:    DefaultMaximumAttempts,
		}
	}
	return &temporal.RetryPolicy{
		InitialInterval:        p.InitialInterval,
		BackoffCoefficient:     p.BackoffCoefficient,
		MaximumInterval:        p.MaximumInterval,
		MaximumAttempts:        p.MaximumAttempts,
		NonRetryableErrorTypes: p.NonRetryableErrors,
	}
}

// shorten cuts a value's text for a message.
func shorten(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
