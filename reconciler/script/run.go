package script

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
	"modernc.org/quickjs"
)

// Failure types of runs whose code reached a limit or could not start. The first two
// fail the workflow task (Temporal retries it), not the run.
const (
	FailureTimeout = "WorkflowCodeTimeout"     // ran longer than Limits.Yield without waiting
	FailureMemory  = "WorkflowCodeMemoryLimit" // allocated more than Limits.Memory
	FailureInput   = "InvalidInput"            // the run's arguments are not JSON
	maxArgs        = 64                        // arguments of a run, a query or an update
	handlerArgs    = 10                        // arguments a query or update handler receives
	maxLogAttrs    = 32                        // attributes of one log line
	logMessageMax  = 16 << 10                  // bytes of one log message
)

// Options are what a run needs from its worker.
type Options struct {
	Limits Limits
	// Warm, if set, supplies VMs made ahead of need.
	Warm *Warm
}

// errClosed is a call into a run whose VM is closed.
var errClosed = errors.New("the run's code is not loaded")

// LimitError is a limit the run's code reached. The driver panics with it so that
// the SDK fails the workflow task (and Temporal retries it) rather than the run.
type LimitError struct {
	Type    string
	Message string
}

func (e *LimitError) Error() string { return e.Type + ": " + e.Message }

// run is one workflow run's VM and what connects it to the Temporal SDK. Every call
// into the VM happens on a workflow coroutine (or in a query handler while the
// coroutines are blocked), so the VM is never used by two goroutines at once.
type run struct {
	ctx    workflow.Context // the run's root context: cancelled when the run is
	bg     workflow.Context // disconnected from it: the driver's waits and commands
	prog   *Program
	vm     *quickjs.VM
	fns    map[string]quickjs.Value
	limits Limits
	// vmMu is held by every call into the VM and by close. Coroutines never run at
	// once, but one the SDK's deadlock detector gave up on (a native operation that
	// outran the interrupt) may still be inside the VM when the run is evicted.
	vmMu   sync.Mutex
	closed atomic.Bool

	taskKey int           // the history length when the current workflow task began
	used    time.Duration // JavaScript time spent in the current workflow task
	inQuery bool          // a query or validator runs: no commands, its own time budget
	fatal   error         // a limit was reached: fail the workflow task

	ops     map[int]workflow.CancelFunc // command seq -> cancel
	handles errorHandles

	done    bool
	value   json.RawMessage // the result (nil: undefined)
	failure *failure

	listening  map[string]bool // signal names read from their channels
	newUpdates []string        // update handlers to register once the VM call returns
	nextUpdate int
	updates    map[int]*outcome
}

type outcome struct {
	Value   *string  `json:"value"`
	Failure *failure `json:"failure"`
}

// Execute runs prog as the current workflow with the run's arguments and returns its
// result. The VM lives as long as this call: until the run ends or the SDK evicts it
// from its cache (a later task replays the history into a new VM).
func Execute(ctx workflow.Context, prog *Program, args converter.EncodedValues, opts Options) (any, error) {
	argsJSON := json.RawMessage("[]")
	if args != nil && args.HasValues() {
		var err error
		if argsJSON, err = rawValues(args.Get, maxArgs); err != nil {
			return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("the run's arguments cannot be read: %s", err), FailureInput, nil)
		}
	}
	var seed uint64
	if err := workflow.SideEffect(ctx, func(workflow.Context) any { return rand.Uint64() }).Get(&seed); err != nil {
		return nil, fmt.Errorf("seed the run's randomness: %w", err)
	}
	bg, _ := workflow.NewDisconnectedContext(ctx)
	r := &run{ctx: ctx, bg: bg, prog: prog, limits: opts.Limits, ops: map[int]workflow.CancelFunc{},
		listening: map[string]bool{}, updates: map[int]*outcome{}, fns: map[string]quickjs.Value{}}
	vm, err := opts.Warm.vm(opts.Limits, r.host)
	if err != nil {
		// The process could not make a VM (the engine's function table is full):
		// another worker, or this one later, can.
		panic(fmt.Sprintf("workflow code cannot start: %s", err))
	}
	r.vm = vm
	defer r.close()
	// The driver's entry points, taken before the module runs and then hidden from it.
	for _, name := range []string{"start", "settle", "signal", "query", "validate", "update", "cancel", "conditions"} {
		v, err := vm.EvalValue("__rt."+name, quickjs.EvalGlobal)
		if err != nil {
			panic(fmt.Sprintf("workflow runtime: %s", err))
		}
		r.fns[name] = v
	}
	if _, err := vm.Eval("delete globalThis.__rt", quickjs.EvalGlobal); err != nil {
		panic(fmt.Sprintf("workflow runtime: %s", err))
	}
	if _, err := vm.EvalBytecode(prog.bytecode); err != nil {
		return nil, r.startFailure(err)
	}

	// Cancellation of the run reaches the code as the root scope's cancellation.
	workflow.Go(bg, func(c workflow.Context) {
		ctx.Done().Receive(c, nil)
		r.enterJS("cancel")
	})
	r.enterJS("start", prog.export, string(argsJSON), int32(seed>>32), int32(seed))
	if err := workflow.Await(bg, func() bool { return r.done }); err != nil {
		return nil, err
	}
	return r.result()
}

// startFailure is a module whose top level throws when a run loads it.
func (r *run) startFailure(err error) error {
	r.classify(err)
	r.check()
	p := r.prog.problem(err)
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("the workflow module failed to load: %s", p), errorName(err), nil)
}

func errorName(err error) string {
	var qe *quickjs.Error
	if errors.As(err, &qe) && qe.Name != "" {
		return qe.Name
	}
	return "Error"
}

func (r *run) close() {
	r.vmMu.Lock()
	defer r.vmMu.Unlock()
	if r.closed.Swap(true) {
		return
	}
	for _, v := range r.fns {
		v.Free()
	}
	r.vm.Close()
}

// result is how the run ends.
func (r *run) result() (any, error) {
	if r.failure == nil {
		if r.value == nil {
			return nil, nil
		}
		return r.value, nil
	}
	if r.failure.Class == "ContinueAsNew" {
		var args []json.RawMessage
		_ = json.Unmarshal(r.failure.Args, &args)
		as := make([]any, len(args))
		for i, a := range args {
			as[i] = a
		}
		return nil, workflow.NewContinueAsNewError(r.ctx, workflow.GetInfo(r.ctx).WorkflowType.Name, as...)
	}
	return nil, r.handles.toError(r.sourceStacks(r.failure))
}

// sourceStacks rewrites the failure's stack traces with positions in the module's
// source.
func (r *run) sourceStacks(f *failure) *failure {
	for g := f; g != nil; g = g.Cause {
		if g.Stack != "" {
			g.Stack = r.prog.positions.stack(g.Stack)
		}
	}
	return f
}

// enterJS calls one of the runtime's entry points on a workflow coroutine, runs the
// jobs and conditions it made ready, and fails the workflow task if a limit was
// reached.
func (r *run) enterJS(fn string, args ...any) any {
	if r.closed.Load() {
		return nil
	}
	v, err := r.call(fn, args...)
	if errors.Is(err, errClosed) {
		return nil
	}
	if err != nil {
		r.classify(err)
		if r.fatal == nil {
			r.fatal = &LimitError{Type: "WorkflowCodeError", Message: fmt.Sprintf("the workflow runtime failed in %s: %s", fn, err)}
		}
	}
	r.drain()
	r.check()
	r.registerUpdates()
	return v
}

// registerUpdates registers the update handlers the code set. The SDK yields the
// coroutine when it does (letting updates that waited for the handler run), so this
// happens between calls into the VM, never inside one.
func (r *run) registerUpdates() {
	for len(r.newUpdates) > 0 {
		name := r.newUpdates[0]
		r.newUpdates = r.newUpdates[1:]
		err := workflow.SetUpdateHandlerWithOptions(r.ctx, name,
			func(ctx workflow.Context, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 converter.RawValue) (json.RawMessage, error) {
				return r.update(ctx, name, argsOf(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9))
			},
			workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 converter.RawValue) error {
				return r.validate(name, argsOf(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9))
			}})
		if err != nil {
			panic(fmt.Sprintf("register the update handler %q: %s", name, err))
		}
	}
}

// call runs a runtime entry point within what is left of the workflow task's budget.
func (r *run) call(fn string, args ...any) (any, error) {
	budget := r.limits.Yield
	if !r.inQuery {
		key := workflow.GetInfo(r.ctx).GetCurrentHistoryLength()
		if key != r.taskKey {
			r.taskKey, r.used = key, 0
		}
		budget -= r.used
		if budget <= 0 {
			r.fatal = r.timeoutError()
			return nil, r.fatal
		}
	}
	r.vmMu.Lock()
	defer r.vmMu.Unlock()
	if r.closed.Load() {
		return nil, errClosed
	}
	_ = r.vm.SetEvalTimeout(budget)
	t0 := time.Now()
	var v any
	var err error
	if fn == "" {
		_, err = r.vm.ExecutePendingJobs()
	} else {
		v, err = r.fns[fn].Call(quickjs.UndefinedValue, args...)
	}
	if !r.inQuery {
		r.used += time.Since(t0)
	}
	return v, err
}

// drain runs the promise jobs and the conditions that became true, until neither is
// left: what the TypeScript SDK does at the end of an activation.
func (r *run) drain() {
	for i := 0; r.fatal == nil && !r.closed.Load(); i++ {
		if _, err := r.call(""); errors.Is(err, errClosed) {
			return
		} else if err != nil {
			r.classify(err)
			if r.fatal == nil {
				r.fatal = &LimitError{Type: "WorkflowCodeError", Message: "a promise job failed: " + err.Error()}
			}
			return
		}
		n, err := r.call("conditions")
		if errors.Is(err, errClosed) {
			return
		} else if err != nil {
			r.classify(err)
			if r.fatal == nil {
				r.fatal = &LimitError{Type: "WorkflowCodeError", Message: "evaluating conditions failed: " + err.Error()}
			}
			return
		}
		if c, _ := n.(int); c == 0 {
			return
		}
	}
}

// classify turns an engine error that is a limit into r.fatal.
func (r *run) classify(err error) {
	var qe *quickjs.Error
	if !errors.As(err, &qe) {
		if strings.Contains(err.Error(), "OOM") {
			r.fatal = r.memoryError()
		}
		return
	}
	switch {
	case qe.Message == "interrupted":
		r.fatal = r.timeoutError()
	case qe.Message == "out of memory":
		r.fatal = r.memoryError()
	}
}

func (r *run) timeoutError() error {
	return &LimitError{Type: FailureTimeout, Message: fmt.Sprintf(
		"workflow code ran for more than %s without waiting for Temporal (an endless loop?); the workflow task fails and is retried (RECONCILER_WORKFLOW_CODE_TIMEOUT)", r.limits.Yield)}
}

func (r *run) memoryError() error {
	return &LimitError{Type: FailureMemory, Message: fmt.Sprintf(
		"workflow code needed more than %d MiB of memory; the workflow task fails and is retried (RECONCILER_WORKFLOW_CODE_MEMORY_MB)", r.limits.Memory>>20)}
}

// check fails the workflow task when a limit was reached. The VM is left as the
// interrupt left it: the SDK drops this run from its cache and closes it.
func (r *run) check() {
	if r.fatal != nil && !r.inQuery {
		panic(r.fatal)
	}
}

// host answers the runtime: __host(op, json).
func (r *run) host(args []any) (any, error) {
	if len(args) != 2 {
		return nil, errors.New("bad host call")
	}
	op, _ := args[0].(string)
	arg, _ := args[1].(string)
	switch op {
	case "now":
		return strconv.FormatInt(workflow.Now(r.ctx).UnixMilli(), 10), nil
	case "done":
		var o outcome
		if err := json.Unmarshal([]byte(arg), &o); err != nil {
			return nil, err
		}
		r.done = true
		if o.Value != nil {
			r.value = json.RawMessage(*o.Value)
		}
		r.failure = o.Failure
		// The engine throws an InternalError when an allocation would pass the limit,
		// or null when even that error cannot be allocated.
		if f := o.Failure; f != nil && ((f.Name == "InternalError" && f.Message == "out of memory") ||
			(f.Class == "Error" && f.Message == "null" && f.Stack == "" && f.Cause == nil)) {
			r.fatal = r.memoryError()
		}
		return nil, nil
	case "info":
		return r.info(), nil
	case "log":
		return nil, r.log(arg)
	}
	if r.inQuery {
		return nil, fmt.Errorf("%s is not allowed in a query handler or an update validator", op)
	}
	switch op {
	case "timer":
		return nil, r.timer(arg)
	case "activity":
		return nil, r.activity(arg)
	case "child":
		return nil, r.child(arg)
	case "signalChild":
		return nil, r.signalChild(arg)
	case "cancel":
		var c struct{ Seq int }
		if err := json.Unmarshal([]byte(arg), &c); err != nil {
			return nil, err
		}
		if cancel := r.ops[c.Seq]; cancel != nil {
			cancel()
		}
		return nil, nil
	case "handler":
		return nil, r.handler(arg)
	case "patched":
		var p struct {
			ID         string `json:"id"`
			Deprecated bool   `json:"deprecated"`
		}
		if err := json.Unmarshal([]byte(arg), &p); err != nil {
			return nil, err
		}
		v := workflow.GetVersion(r.ctx, p.ID, workflow.DefaultVersion, 1)
		return strconv.FormatBool(v == 1), nil
	case "updateDone":
		var u struct {
			ID int `json:"id"`
			outcome
		}
		if err := json.Unmarshal([]byte(arg), &u); err != nil {
			return nil, err
		}
		r.updates[u.ID] = &u.outcome
		return nil, nil
	}
	return nil, fmt.Errorf("unknown host call %q", op)
}

// settle delivers a command's outcome to the runtime.
func (r *run) settle(seq int, value json.RawMessage, err error) {
	m := map[string]any{"seq": seq}
	if err != nil {
		m["failure"] = r.handles.fromError(err)
	} else if value != nil {
		m["value"] = string(value)
	}
	b, _ := json.Marshal(m)
	r.enterJS("settle", string(b))
}

// wait settles seq with the future's outcome once it is ready.
func (r *run) wait(seq int, f workflow.Future, kind string) {
	workflow.Go(r.bg, func(c workflow.Context) {
		var raw converter.RawValue
		err := f.Get(c, &raw)
		delete(r.ops, seq)
		var value json.RawMessage
		if err == nil && raw.Payload() != nil {
			value = payloadJSON(raw.Payload())
		}
		var canceled *temporal.CanceledError
		if kind == "activity" && errors.As(err, &canceled) {
			// A cancelled activity rejects with an ActivityFailure caused by the
			// cancellation, as in the TypeScript SDK.
			err = &activityCancelled{cause: canceled}
		}
		r.settle(seq, value, err)
	})
}

// activityCancelled stands for a cancelled activity: the SDK settles its future with
// a bare CanceledError.
type activityCancelled struct{ cause *temporal.CanceledError }

func (e *activityCancelled) Error() string { return "activity cancelled" }
func (e *activityCancelled) Unwrap() error { return e.cause }

func ms(v *float64) time.Duration {
	if v == nil {
		return 0
	}
	return msDuration(*v)
}

func msDuration(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

type retryJSON struct {
	InitialInterval        *float64 `json:"initialInterval"`
	BackoffCoefficient     *float64 `json:"backoffCoefficient"`
	MaximumInterval        *float64 `json:"maximumInterval"`
	MaximumAttempts        *float64 `json:"maximumAttempts"`
	NonRetryableErrorTypes []string `json:"nonRetryableErrorTypes"`
}

func (p *retryJSON) policy() *temporal.RetryPolicy {
	if p == nil {
		return nil
	}
	rp := &temporal.RetryPolicy{InitialInterval: ms(p.InitialInterval), MaximumInterval: ms(p.MaximumInterval),
		NonRetryableErrorTypes: p.NonRetryableErrorTypes}
	if p.BackoffCoefficient != nil {
		rp.BackoffCoefficient = *p.BackoffCoefficient
	}
	if p.MaximumAttempts != nil {
		rp.MaximumAttempts = int32(*p.MaximumAttempts)
	}
	return rp
}

func (r *run) timer(arg string) error {
	var t struct {
		Seq int     `json:"seq"`
		MS  float64 `json:"ms"`
	}
	if err := json.Unmarshal([]byte(arg), &t); err != nil {
		return err
	}
	octx, cancel := workflow.WithCancel(r.bg)
	r.ops[t.Seq] = cancel
	r.wait(t.Seq, workflow.NewTimer(octx, msDuration(t.MS)), "timer")
	return nil
}

func (r *run) activity(arg string) error {
	var a struct {
		Seq     int               `json:"seq"`
		Name    string            `json:"name"`
		Args    []json.RawMessage `json:"args"`
		Local   bool              `json:"local"`
		Options struct {
			StartToClose    *float64   `json:"startToCloseTimeout"`
			ScheduleToClose *float64   `json:"scheduleToCloseTimeout"`
			ScheduleToStart *float64   `json:"scheduleToStartTimeout"`
			Heartbeat       *float64   `json:"heartbeatTimeout"`
			ActivityID      string     `json:"activityId"`
			WaitForCancel   bool       `json:"waitForCancellation"`
			Retry           *retryJSON `json:"retry"`
		} `json:"options"`
	}
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return err
	}
	octx, cancel := workflow.WithCancel(r.bg)
	r.ops[a.Seq] = cancel
	o := a.Options
	var f workflow.Future
	if a.Local {
		octx = workflow.WithLocalActivityOptions(octx, workflow.LocalActivityOptions{
			StartToCloseTimeout: ms(o.StartToClose), ScheduleToCloseTimeout: ms(o.ScheduleToClose), RetryPolicy: o.Retry.policy(),
		})
		f = workflow.ExecuteLocalActivity(octx, a.Name, encodedArgs(a.Args))
	} else {
		octx = workflow.WithActivityOptions(octx, workflow.ActivityOptions{
			StartToCloseTimeout: ms(o.StartToClose), ScheduleToCloseTimeout: ms(o.ScheduleToClose),
			ScheduleToStartTimeout: ms(o.ScheduleToStart), HeartbeatTimeout: ms(o.Heartbeat),
			ActivityID: o.ActivityID, WaitForCancellation: o.WaitForCancel, RetryPolicy: o.Retry.policy(),
		})
		args := make([]any, len(a.Args))
		for i, v := range a.Args {
			args[i] = v
		}
		f = workflow.ExecuteActivity(octx, a.Name, args...)
	}
	r.wait(a.Seq, f, "activity")
	return nil
}

// encodedArgs hands a local activity its arguments the way the dynamic activity reads
// them (a local activity's arguments are not serialised).
type encodedArgs []json.RawMessage

func (e encodedArgs) HasValues() bool { return len(e) > 0 }

func (e encodedArgs) Get(ptrs ...any) error {
	for i, p := range ptrs {
		if i >= len(e) {
			break
		}
		if err := json.Unmarshal(e[i], p); err != nil {
			return fmt.Errorf("argument %d: %w", i, err)
		}
	}
	return nil
}

func (r *run) child(arg string) error {
	var c struct {
		Seq               int               `json:"seq"`
		ResultSeq         int               `json:"resultSeq"`
		WorkflowType      string            `json:"workflowType"`
		WorkflowID        string            `json:"workflowId"`
		Args              []json.RawMessage `json:"args"`
		ExecutionTimeout  *float64          `json:"workflowExecutionTimeout"`
		RunTimeout        *float64          `json:"workflowRunTimeout"`
		TaskTimeout       *float64          `json:"workflowTaskTimeout"`
		ParentClosePolicy string            `json:"parentClosePolicy"`
		WaitForCancel     bool              `json:"waitForCancellation"`
		Memo              map[string]any    `json:"memo"`
		Retry             *retryJSON        `json:"retry"`
	}
	if err := json.Unmarshal([]byte(arg), &c); err != nil {
		return err
	}
	octx, cancel := workflow.WithCancel(r.bg)
	r.ops[c.Seq] = cancel
	octx = workflow.WithChildOptions(octx, workflow.ChildWorkflowOptions{
		WorkflowID: c.WorkflowID, WorkflowExecutionTimeout: ms(c.ExecutionTimeout), WorkflowRunTimeout: ms(c.RunTimeout),
		WorkflowTaskTimeout: ms(c.TaskTimeout), WaitForCancellation: c.WaitForCancel, RetryPolicy: c.Retry.policy(),
		ParentClosePolicy: parentClosePolicy(c.ParentClosePolicy), Memo: c.Memo,
	})
	args := make([]any, len(c.Args))
	for i, v := range c.Args {
		args[i] = v
	}
	f := workflow.ExecuteChildWorkflow(octx, c.WorkflowType, args...)
	workflow.Go(r.bg, func(gc workflow.Context) {
		var exec workflow.Execution
		if err := f.GetChildWorkflowExecution().Get(gc, &exec); err != nil {
			delete(r.ops, c.Seq)
			r.settle(c.Seq, nil, err)
			return
		}
		runID, _ := json.Marshal(exec.RunID)
		r.settle(c.Seq, runID, nil)
		var raw converter.RawValue
		err := f.Get(gc, &raw)
		delete(r.ops, c.Seq)
		var value json.RawMessage
		if err == nil && raw.Payload() != nil {
			value = payloadJSON(raw.Payload())
		}
		r.settle(c.ResultSeq, value, err)
	})
	return nil
}

func parentClosePolicy(s string) enumspb.ParentClosePolicy {
	switch strings.TrimPrefix(s, "PARENT_CLOSE_POLICY_") {
	case "ABANDON":
		return enumspb.PARENT_CLOSE_POLICY_ABANDON
	case "REQUEST_CANCEL":
		return enumspb.PARENT_CLOSE_POLICY_REQUEST_CANCEL
	case "TERMINATE":
		return enumspb.PARENT_CLOSE_POLICY_TERMINATE
	}
	return enumspb.PARENT_CLOSE_POLICY_UNSPECIFIED
}

func (r *run) signalChild(arg string) error {
	var s struct {
		Seq        int               `json:"seq"`
		WorkflowID string            `json:"workflowId"`
		Name       string            `json:"name"`
		Args       []json.RawMessage `json:"args"`
	}
	if err := json.Unmarshal([]byte(arg), &s); err != nil {
		return err
	}
	octx, cancel := workflow.WithCancel(r.bg)
	r.ops[s.Seq] = cancel
	var payload any
	if len(s.Args) > 0 {
		payload = s.Args[0]
	}
	r.wait(s.Seq, workflow.SignalExternalWorkflow(octx, s.WorkflowID, "", s.Name, payload), "signal")
	return nil
}

// handler registers the Go side of a signal, query or update handler the code set.
func (r *run) handler(arg string) error {
	var h struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(arg), &h); err != nil {
		return err
	}
	switch h.Kind {
	case "signal":
		if r.listening[h.Name] {
			return nil
		}
		r.listening[h.Name] = true
		ch := workflow.GetSignalChannel(r.bg, h.Name)
		workflow.Go(r.bg, func(c workflow.Context) {
			for {
				var raw converter.RawValue
				ch.Receive(c, &raw)
				r.enterJS("signal", h.Name, string(arrayJSON([]json.RawMessage{payloadJSON(raw.Payload())})))
			}
		})
	case "query":
		name := h.Name
		return workflow.SetQueryHandler(r.ctx, name, func(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 converter.RawValue) (json.RawMessage, error) {
			return r.query(name, argsOf(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9))
		})
	case "update":
		r.newUpdates = append(r.newUpdates, h.Name) // see registerUpdates
	}
	return nil
}

func argsOf(vs ...converter.RawValue) string {
	var out []json.RawMessage
	for _, v := range vs {
		if v.Payload() == nil {
			break
		}
		out = append(out, payloadJSON(v.Payload()))
	}
	return string(arrayJSON(out))
}

// query answers a query with the code's handler, within its own time budget; a
// handler that reaches a limit fails the query, not the run.
func (r *run) query(name, args string) (json.RawMessage, error) {
	if r.closed.Load() {
		return nil, errors.New("the run's code is not loaded")
	}
	r.inQuery = true
	defer func() { r.inQuery = false }()
	v, err := r.call("query", name, args)
	if err != nil {
		return nil, jsError(err)
	}
	s, _ := v.(string)
	if s == "" {
		return nil, nil
	}
	return json.RawMessage(s), nil
}

// validate runs an update's validator; an error it throws rejects the update.
func (r *run) validate(name, args string) error {
	if r.closed.Load() {
		return errors.New("the run's code is not loaded")
	}
	r.inQuery = true
	defer func() { r.inQuery = false }()
	if _, err := r.call("validate", name, args); err != nil {
		return jsError(err)
	}
	return nil
}

// update runs an update's handler and waits for the promise it returns.
func (r *run) update(ctx workflow.Context, name, args string) (json.RawMessage, error) {
	r.nextUpdate++
	id := r.nextUpdate
	r.enterJS("update", id, name, args)
	// Blocking calls take the context of the coroutine that blocks (the update's own),
	// disconnected so that cancelling the run does not abandon the update.
	wctx, _ := workflow.NewDisconnectedContext(ctx)
	if err := workflow.Await(wctx, func() bool { return r.updates[id] != nil || r.closed.Load() }); err != nil {
		return nil, err
	}
	o := r.updates[id]
	delete(r.updates, id)
	if o == nil {
		return nil, errors.New("the run ended before the update finished")
	}
	if o.Failure != nil {
		return nil, r.handles.toError(r.sourceStacks(o.Failure))
	}
	if o.Value == nil {
		return nil, nil
	}
	return json.RawMessage(*o.Value), nil
}

// jsError is an exception a handler threw, as an application error of its name.
func jsError(err error) error {
	var qe *quickjs.Error
	if errors.As(err, &qe) {
		msg := qe.Message
		if msg == "interrupted" {
			msg = "the handler ran too long and was interrupted"
		}
		return temporal.NewApplicationError(msg, errorName(err))
	}
	return err
}

// info is workflowInfo() as JSON.
func (r *run) info() string {
	i := workflow.GetInfo(r.ctx)
	m := map[string]any{
		"workflowId":             i.WorkflowExecution.ID,
		"runId":                  i.WorkflowExecution.RunID,
		"workflowType":           i.WorkflowType.Name,
		"taskQueue":              i.TaskQueueName,
		"namespace":              i.Namespace,
		"attempt":                i.Attempt,
		"firstExecutionRunId":    i.FirstRunID,
		"historyLength":          i.GetCurrentHistoryLength(),
		"historySize":            i.GetCurrentHistorySize(),
		"continueAsNewSuggested": i.GetContinueAsNewSuggested(),
		"startTime":              i.WorkflowStartTime.UnixMilli(),
		"runStartTime":           i.WorkflowStartTime.UnixMilli(),
		"unsafe":                 map[string]any{"isReplaying": workflow.IsReplaying(r.ctx)},
	}
	if i.ContinuedExecutionRunID != "" {
		m["continuedFromExecutionRunId"] = i.ContinuedExecutionRunID
	}
	if i.WorkflowExecutionTimeout > 0 {
		m["executionTimeout"] = i.WorkflowExecutionTimeout.Milliseconds()
	}
	if i.WorkflowRunTimeout > 0 {
		m["runTimeout"] = i.WorkflowRunTimeout.Milliseconds()
	}
	if i.CronSchedule != "" {
		m["cronSchedule"] = i.CronSchedule
	}
	if p := i.ParentWorkflowExecution; p != nil {
		m["parent"] = map[string]any{"workflowId": p.ID, "runId": p.RunID, "namespace": i.ParentWorkflowNamespace}
	}
	if memo := i.Memo; memo != nil && len(memo.GetFields()) > 0 {
		fields := map[string]json.RawMessage{}
		for k, p := range memo.GetFields() {
			fields[k] = payloadJSON(p)
		}
		m["memo"] = fields
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// log writes a line of log.* or console.* through the SDK's replay-aware logger.
func (r *run) log(arg string) error {
	var l struct {
		Level   string         `json:"level"`
		Message string         `json:"message"`
		Attrs   map[string]any `json:"attrs"`
	}
	if err := json.Unmarshal([]byte(arg), &l); err != nil {
		return err
	}
	if len(l.Message) > logMessageMax {
		l.Message = l.Message[:logMessageMax] + "…"
	}
	kv := []any{"source", "workflow code"}
	n := 0
	for k, v := range l.Attrs {
		if n++; n > maxLogAttrs {
			break
		}
		kv = append(kv, k, v)
	}
	logger := workflow.GetLogger(r.ctx)
	switch l.Level {
	case "debug":
		logger.Debug(l.Message, kv...)
	case "warn":
		logger.Warn(l.Message, kv...)
	case "error":
		logger.Error(l.Message, kv...)
	default:
		logger.Info(l.Message, kv...)
	}
	return nil
}
