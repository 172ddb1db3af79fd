package flow

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// StateQuery is the Temporal query every run answers with its State.
const StateQuery = "state"

// Failure types of runs that end for reasons of the definition or its data.
const (
	FailureWorkflow   = "WorkflowFailed"      // a fail node
	FailureExpression = "ExpressionError"     // a template or condition could not be evaluated
	FailureActivity   = "ActivityFailed"      // an activity node failed after its retries
	FailureChild      = "ChildWorkflowFailed" // a child_workflow node's run failed
)

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
}

// Options are fixed for a run when it starts.
type Options struct {
	// MaxSteps ends a run with a StepLimitExceeded failure after that many node
	// executions; it stops runaway loops.
	MaxSteps int
	// Pinned is echoed in the state query (which compiled version the run uses).
	Pinned map[string]any
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

// Execute runs def with input as the current Temporal workflow and returns its result.
func Execute(ctx workflow.Context, def *Definition, input any, opts Options) (any, error) {
	r := &run{
		def:     def,
		opts:    opts,
		input:   input,
		nodes:   map[string]any{},
		outputs: map[string]any{},
		signals: map[string]any{},
		pending: map[string][]any{},
	}
	if r.opts.TaskSteps <= 0 {
		r.opts.TaskSteps = DefaultTaskSteps
	}
	r.taskSteps = r.opts.TaskSteps
	if err := workflow.SetQueryHandler(ctx, StateQuery, r.state); err != nil {
		return nil, fmt.Errorf("register state query: %w", err)
	}
	for _, name := range def.Signals {
		ch := workflow.GetSignalChannel(ctx, name)
		workflow.Go(ctx, func(ctx workflow.Context) {
			for {
				var payload any
				ch.Receive(ctx, &payload)
				r.pending[name] = append(r.pending[name], payload)
				r.signals[name] = payload
			}
		})
	}
	out, err := r.branch(ctx, def.Start)
	r.done = true
	var ret *returned
	if errors.As(err, &ret) {
		return ret.value, nil
	}
	return out, err
}

type run struct {
	def   *Definition
	opts  Options
	input any

	nodes    map[string]any // id -> {"output": ...}, as expressions see it
	outputs  map[string]any
	executed []string
	signals  map[string]any
	pending  map[string][]any
	steps    int
	done     bool
	// taskSteps is what is left of TaskSteps until the run next waits.
	taskSteps int64
}

// returned carries a return node's value up through branches.
type returned struct{ value any }

func (r *returned) Error() string { return "workflow returned" }

func (r *run) scope() Scope {
	return Scope{Input: r.input, Nodes: r.nodes, Signals: r.signals}
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
		s.Nodes[id] = NodeState{Output: out}
	}
	return s, nil
}

// branch runs nodes from id until one has no successor and returns that node's output.
func (r *run) branch(ctx workflow.Context, id string) (any, error) {
	var last any
	for id != "" {
		if r.opts.MaxSteps > 0 && r.steps >= r.opts.MaxSteps {
			return nil, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("the run executed %d nodes without finishing (limit %d), the last at node %q: check the loop in the definition",
					r.steps, r.opts.MaxSteps, id), ErrStepLimit, nil)
		}
		r.steps++
		n := r.def.Nodes[id]
		out, next, err := r.exec(ctx, n)
		var ret *returned
		if err != nil && !errors.As(err, &ret) {
			return nil, err
		}
		r.outputs[id] = out
		r.nodes[id] = map[string]any{"output": out}
		r.executed = append(r.executed, id)
		if err != nil {
			return nil, err
		}
		last = out
		id = next
	}
	return last, nil
}

// exec runs one node and says which node comes next ("" ends the branch).
func (r *run) exec(ctx workflow.Context, n *Node) (out any, next string, err error) {
	switch n.Type {
	case TypeActivity:
		input, err := r.eval(n, "input", n.Input)
		if err != nil {
			return nil, "", err
		}
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: n.Timeout,
			RetryPolicy:         retryPolicy(n.Retry),
		})
		err = workflow.ExecuteActivity(actx, n.Activity, input).Get(actx, &out)
		r.waited()
		if err != nil {
			return nil, "", nodeFailed(n, FailureActivity, "activity "+n.Activity, err)
		}
		return out, n.Next, nil

	case TypeCondition:
		v, err := r.condition(n.If)
		if err != nil {
			return nil, "", expressionError(n, "if", err)
		}
		b, ok := v.(bool)
		if !ok {
			return nil, "", expressionError(n, "if", fmt.Errorf("%q gave %s, not a boolean", n.If, text(v)))
		}
		if b {
			return true, n.Then, nil
		}
		return false, n.Else, nil

	case TypeSleep:
		d, err := r.duration(n, "duration", n.Duration)
		if err != nil {
			return nil, "", err
		}
		if err := workflow.Sleep(ctx, d); err != nil {
			return nil, "", err
		}
		if d > 0 {
			r.waited()
		}
		return nil, n.Next, nil

	case TypeParallel:
		out, err := r.parallel(ctx, n)
		return out, n.Next, err

	case TypeWaitSignal:
		ready := func() bool { return len(r.pending[n.Signal]) > 0 }
		if !ready() {
			defer r.waited() // it waits: a signal buffered already does not reset the budget
		}
		if n.WaitTimeout != nil {
			d, err := r.duration(n, "timeout", n.WaitTimeout)
			if err != nil {
				return nil, "", err
			}
			ok, err := workflow.AwaitWithTimeout(ctx, d, ready)
			if err != nil {
				return nil, "", err
			}
			if !ok {
				if n.OnTimeout != "" {
					return nil, n.OnTimeout, nil
				}
				return nil, n.Next, nil
			}
		} else if err := workflow.Await(ctx, ready); err != nil {
			return nil, "", err
		}
		payload := r.pending[n.Signal][0]
		r.pending[n.Signal] = r.pending[n.Signal][1:]
		return payload, n.Next, nil

	case TypeChildWorkflow:
		input, err := r.eval(n, "input", n.Input)
		if err != nil {
			return nil, "", err
		}
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{})
		err = workflow.ExecuteChildWorkflow(cctx, n.Workflow, input).Get(cctx, &out)
		r.waited()
		if err != nil {
			return nil, "", nodeFailed(n, FailureChild, "child workflow "+n.Workflow, err)
		}
		return out, n.Next, nil

	case TypeReturn:
		v, err := r.eval(n, "value", n.Value)
		if err != nil {
			return nil, "", err
		}
		return v, "", &returned{value: v}

	case TypeFail:
		v, err := r.eval(n, "message", n.Message)
		if err != nil {
			return nil, "", err
		}
		return nil, "", temporal.NewNonRetryableApplicationError(text(v), FailureWorkflow, nil)
	}
	return nil, "", fmt.Errorf("node %q: unknown type %q", n.ID, n.Type)
}

// parallel runs each branch in its own coroutine. The first branch to fail or return
// cancels the others; otherwise the output is every branch's last output, in order.
func (r *run) parallel(ctx workflow.Context, n *Node) (any, error) {
	bctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	results := make([]any, len(n.Branches))
	var first error
	finished := 0
	for i, start := range n.Branches {
		workflow.Go(bctx, func(gctx workflow.Context) {
			out, err := r.branch(gctx, start)
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

func (r *run) eval(n *Node, field string, t *Template) (any, error) {
	l, fromTask := r.limits()
	v, used, err := t.evalCounted(r.scope(), l)
	r.taskSteps -= used
	if err != nil {
		return nil, expressionError(n, field, r.taskLimit(err, fromTask))
	}
	return v, nil
}

// condition evaluates a condition within the run's limits.
func (r *run) condition(e *Expr) (any, error) {
	l, fromTask := r.limits()
	v, used, err := e.evalCounted(r.scope(), l)
	r.taskSteps -= used
	return v, r.taskLimit(err, fromTask)
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

// waited resets the workflow task's budget: the run has waited for Temporal.
func (r *run) waited() { r.taskSteps = r.opts.TaskSteps }

// duration evaluates a duration field: a Go duration string, or a number of seconds.
func (r *run) duration(n *Node, field string, t *Template) (time.Duration, error) {
	v, err := r.eval(n, field, t)
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

// nodeFailed ends the run because a node's activity or child failed (after its
// retries); the cause keeps the original failure. A cancellation stays a cancellation.
func nodeFailed(n *Node, typ, what string, err error) error {
	if temporal.IsCanceledError(err) {
		return err
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("node %q: %s failed", n.ID, what), typ, err)
}

func expressionError(n *Node, field string, err error) error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("node %q: %s: %s", n.ID, field, err), FailureExpression, nil)
}

func retryPolicy(p *RetryPolicy) *temporal.RetryPolicy {
	if p == nil {
		return nil
	}
	return &temporal.RetryPolicy{
		InitialInterval:        p.InitialInterval,
		BackoffCoefficient:     p.BackoffCoefficient,
		MaximumInterval:        p.MaximumInterval,
		MaximumAttempts:        p.MaximumAttempts,
		NonRetryableErrorTypes: p.NonRetryableErrors,
	}
}
