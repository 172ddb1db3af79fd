// Package component runs the builder's custom activities: JavaScript, in goja.
//
// Tenant code never runs in the service's process. A Pool keeps sandbox processes (the
// service's own binary re-executed in a hidden mode, see RunChildIfRequested), hands
// them out fairly between projects and runs one call at a time in each; the parent
// kills a child whose call overruns its time limit or whose memory grows past its
// limit, so that no input, not even one that crashes the Go runtime, can take the
// service down or starve it. See pool.go and child.go.
//
// Inside a child, every call gets a fresh interpreter (Program.Call), so nothing
// survives between calls, between workflows or between projects. The interpreter has no
// file system, network, process, module loader or timers: only the ECMAScript built-ins
// and a console whose lines reach the worker's log. A call is bounded by a time limit
// that really interrupts the script (including `while (true) {}`), by a call-stack
// depth, by caps on the built-ins that allocate or loop in one native step (typed
// arrays and array buffers, generic array methods, join, repeat, padStart, padEnd) and
// by a memory guard that interrupts the call once the child's live heap has grown past
// the limit. What these cannot stop (a native loop, a one-step allocation) the parent
// stops by killing the child.
package component

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlclark/regexp2/v2"
	"github.com/dop251/goja"
	"github.com/dop251/goja/parser"

	"github.com/flowbuilder/reconciler/internal/isolate"
)

func init() {
	// goja falls back to regexp2 (backtracking) for patterns Go's regexp cannot run; a
	// catastrophic pattern must not pin a CPU for ever. On timeout the match fails.
	regexp2.DefaultMatchTimeout = time.Second
}

// Limits bound one call.
type Limits struct {
	// Timeout interrupts the script.
	Timeout time.Duration
	// Memory is how far the live heap may grow while the call runs; it is also the
	// budget of the typed arrays and array buffers one call may allocate, and sets the
	// longest array a generic array method may walk (Memory/16 elements).
	Memory int64
	// MaxStringBytes caps the strings repeat/padStart/padEnd/join may build.
	MaxStringBytes int
	// MaxOutputBytes caps the JSON of the result.
	MaxOutputBytes int
	// MaxConsoleLines caps console output per call; the rest is dropped.
	MaxConsoleLines int
}

// DefaultLimits are the limits when the configuration does not say otherwise.
var DefaultLimits = Limits{
	Timeout:         10 * time.Second,
	Memory:          128 << 20,
	MaxStringBytes:  16 << 20,
	MaxOutputBytes:  2 << 20,
	MaxConsoleLines: 200,
}

// maxStackDepth bounds JavaScript recursion (RangeError beyond it).
const maxStackDepth = 2000

// Failure types of a call, as Temporal application error types. A `throw` fails with
// the thrown error's name (Error, TypeError, or a custom name), so that retry policies
// can list it in non_retryable_errors. A call that ran out of time or memory would do
// the same again (components have no I/O): those failures are not retryable.
const (
	FailureTimeout     = "ComponentTimeout"
	FailureMemory      = "ComponentMemoryLimit"
	FailureInvalid     = "ComponentInvalid" // does not compile or defines no such function
	FailureOutput      = "ComponentOutputInvalid"
	FailureUnsettled   = "ComponentPromiseUnsettled"
	FailureCanceled    = "ComponentCanceled" // the activity ended (cancelled, timed out) first
	FailureCrashed     = "ComponentCrashed"  // the sandbox died for a reason that is not the call's
	defaultThrownError = "Error"
)

// Error is a failed call.
type Error struct {
	Type      string `json:"type"` // one of the Failure* types, or the thrown error's name
	Message   string `json:"message"`
	Stack     string `json:"stack,omitempty"`
	Retryable bool   `json:"retryable,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Console receives console.log and friends: level is debug, info, warn or error.
type Console func(level, message string)

// Program is a component's code, its syntax checked.
type Program struct {
	name string
	code string

	once     sync.Once
	compiled *goja.Program
	err      error
}

// Compile checks the syntax of a component's code. It only parses: goja's compiler
// evaluates constant expressions, so compiling `1n << 40000000000n` allocates 5 GB
// and `10n ** 40000000n` takes 20 s; tenant code is compiled where it runs, in a
// sandbox child. (The few errors only the compiler finds, such as a redeclared `let`,
// fail the calls with ComponentInvalid instead.)
//
// The parser runs in an isolate child (internal/isolate): it is recursive, and code
// nested deeply enough ends its process with a stack overflow that no recover catches.
// Results are kept by name and code, so that workers restarting with the same
// components do not parse them again.
func Compile(name, code string) (*Program, error) {
	key := sha256.Sum256([]byte(name + "\x00" + code))
	parsed.mu.Lock()
	err, ok := parsed.results[key]
	parsed.mu.Unlock()
	if !ok {
		_, err = isolate.Call(context.Background(), jobParse, []byte(name+"\x00"+code))
		switch {
		case errors.Is(err, isolate.ErrTooDeep):
			err = fmt.Errorf("component %s does not compile: it nests too deeply (the parser ran out of stack)", name)
		case errors.Is(err, isolate.ErrCrashed):
			return nil, fmt.Errorf("component %s could not be parsed: %w", name, err) // not kept: may pass next time
		case err != nil:
			err = fmt.Errorf("component %s does not compile: %s", name, oneLine(err.Error()))
		}
		parsed.mu.Lock()
		if len(parsed.results) >= maxParsed {
			clear(parsed.results)
		}
		parsed.results[key] = err
		parsed.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	return &Program{name: name, code: code}, nil
}

// parsed keeps Compile's results.
var parsed = struct {
	mu      sync.Mutex
	results map[[sha256.Size]byte]error
}{results: map[[sha256.Size]byte]error{}}

const maxParsed = 4096

const jobParse = "component.parse"

func init() {
	isolate.Register(jobParse, func(in []byte) ([]byte, error) {
		name, code, _ := strings.Cut(string(in), "\x00")
		_, err := parser.ParseFile(nil, name+".js", code, 0)
		return nil, err
	})
}

// compile compiles the code once. Only a sandbox child (or a test) should: see Compile.
func (p *Program) compile() (*goja.Program, error) {
	p.once.Do(func() {
		p.compiled, p.err = goja.Compile(p.name+".js", p.code, false)
		if p.err != nil {
			p.err = &Error{Type: FailureInvalid, Message: fmt.Sprintf("component %s does not compile: %s", p.name, oneLine(p.err.Error()))}
		}
	})
	return p.compiled, p.err
}

// Name is the component's name (the function it calls).
func (p *Program) Name() string { return p.name }

// Call runs the component's function in this process with input (a JSON value) and
// returns its result (a JSON value). A returned promise is awaited. This is what a
// sandbox child does for each call; the service calls components through a Pool,
// since nothing bounds in this process what one native step allocates.
func (p *Program) Call(ctx context.Context, input any, lim Limits, console Console) (any, error) {
	in, err := json.Marshal(input)
	if err != nil {
		return nil, &Error{Type: FailureOutput, Message: fmt.Sprintf("input is not JSON: %s", err)}
	}
	out, err := p.run(ctx, string(in), lim, console)
	if err != nil || out == "" {
		return nil, err
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, &Error{Type: FailureOutput, Message: fmt.Sprintf("component %s returned a value that is not JSON: %s", p.name, err)}
	}
	return v, nil
}

// run calls the function with in (JSON text) in a fresh runtime and returns its
// result as JSON text ("" for undefined and null).
func (p *Program) run(ctx context.Context, in string, lim Limits, console Console) (string, error) {
	rt, err := newRuntime(lim)
	if err != nil {
		return "", err
	}
	return p.runIn(ctx, rt, in, console)
}

// jsRuntime is a fresh interpreter with the console and the caps installed, ready
// for one call. Preparing one costs most of a trivial call (the caps materialise the
// built-ins' prototypes), so a sandbox child prepares the next while it is idle.
type jsRuntime struct {
	vm      *goja.Runtime
	lim     Limits
	console Console // where this call's console lines go
	used    bool
}

func newRuntime(lim Limits) (*jsRuntime, error) {
	rt := &jsRuntime{vm: goja.New(), lim: lim}
	rt.vm.SetMaxCallStackSize(maxStackDepth)
	installConsole(rt.vm, func(level, msg string) {
		if rt.console != nil {
			rt.console(level, msg)
		}
	}, lim.MaxConsoleLines)
	if err := limitBuiltins(rt.vm, lim); err != nil {
		return nil, err
	}
	return rt, nil
}

// runIn is run in a prepared runtime, which it uses up.
func (p *Program) runIn(ctx context.Context, rt *jsRuntime, in string, console Console) (string, error) {
	if rt.used {
		return "", errors.New("component: a runtime serves one call")
	}
	rt.used, rt.console = true, console
	vm, lim := rt.vm, rt.lim

	// Everything that can interrupt the script: the time limit, the activity's
	// cancellation and the memory guard. Interrupt is safe from any goroutine.
	done := make(chan struct{})
	defer close(done)
	timer := time.AfterFunc(lim.Timeout, func() {
		vm.Interrupt(p.timeout(lim.Timeout))
	})
	defer timer.Stop()
	stopCancel := context.AfterFunc(ctx, func() {
		vm.Interrupt(&Error{Type: FailureCanceled, Retryable: true,
			Message: fmt.Sprintf("component %s interrupted: %s", p.name, context.Cause(ctx))})
	})
	defer stopCancel()
	if lim.Memory > 0 {
		go guardMemory(done, lim.Memory, func(grew int64) {
			vm.Interrupt(&Error{Type: FailureMemory,
				Message: fmt.Sprintf("component %s was stopped: its heap grew by %d MiB while it ran, past its memory limit of %d MiB", p.name, grew>>20, lim.Memory>>20)})
		})
	}

	prog, err := p.compile()
	if err != nil {
		return "", err
	}
	if _, err := vm.RunProgram(prog); err != nil {
		return "", p.failure(err)
	}
	fn, ok := goja.AssertFunction(vm.Get(p.name))
	if !ok {
		return "", &Error{Type: FailureInvalid, Message: fmt.Sprintf("component %s: the code does not define a function named %s", p.name, p.name)}
	}
	parse, _ := goja.AssertFunction(vm.Get("JSON").ToObject(vm).Get("parse"))
	arg, err := parse(goja.Undefined(), vm.ToValue(in))
	if err != nil {
		return "", p.failure(err)
	}
	res, err := fn(goja.Undefined(), arg)
	if err != nil {
		return "", p.failure(err)
	}
	if promise, ok := res.Export().(*goja.Promise); ok {
		switch promise.State() {
		case goja.PromiseStateFulfilled:
			res = promise.Result()
		case goja.PromiseStateRejected:
			return "", p.thrown(promise.Result())
		default:
			return "", &Error{Type: FailureUnsettled, Message: fmt.Sprintf("component %s returned a promise that never settles (there are no timers or I/O to wait for)", p.name)}
		}
	}
	return p.output(vm, res, lim.MaxOutputBytes)
}

// timeout is the failure of a call that ran longer than limit.
func (p *Program) timeout(limit time.Duration) *Error {
	return &Error{Type: FailureTimeout,
		Message: fmt.Sprintf("component %s ran longer than %s and was stopped", p.name, limit)}
}

// output turns the script's result into JSON text through JSON.stringify, so that
// what the workflow sees is exactly what JavaScript would serialise.
func (p *Program) output(vm *goja.Runtime, v goja.Value, max int) (string, error) {
	if v == nil || goja.IsUndefined(v) || goja.IsNull(v) {
		return "", nil
	}
	stringify, _ := goja.AssertFunction(vm.Get("JSON").ToObject(vm).Get("stringify"))
	s, err := stringify(goja.Undefined(), v)
	if err != nil {
		return "", p.failure(err)
	}
	if goja.IsUndefined(s) {
		return "", nil // functions, symbols
	}
	text := s.String()
	if max > 0 && len(text) > max {
		return "", &Error{Type: FailureOutput, Message: fmt.Sprintf("component %s returned %d bytes of JSON; the limit is %d", p.name, len(text), max)}
	}
	return text, nil
}

// failure translates what goja returned into an Error.
func (p *Program) failure(err error) error {
	var interrupted *goja.InterruptedError
	if errors.As(err, &interrupted) {
		if e, ok := interrupted.Value().(*Error); ok {
			return e
		}
		return &Error{Type: FailureTimeout, Message: fmt.Sprintf("component %s interrupted", p.name)}
	}
	var exc *goja.Exception
	if errors.As(err, &exc) {
		return p.thrown(exc.Value())
	}
	var stack *goja.StackOverflowError
	if errors.As(err, &stack) {
		return &Error{Type: "RangeError", Retryable: true, Message: fmt.Sprintf("component %s: maximum call stack size exceeded", p.name)}
	}
	return &Error{Type: defaultThrownError, Retryable: true, Message: fmt.Sprintf("component %s: %s", p.name, oneLine(err.Error()))}
}

// thrown describes a thrown (or rejected) JavaScript value.
func (p *Program) thrown(v goja.Value) error {
	e := &Error{Type: defaultThrownError, Retryable: true}
	if obj, ok := v.(*goja.Object); ok {
		if name := obj.Get("name"); name != nil && !goja.IsUndefined(name) && name.String() != "" {
			e.Type = name.String()
		}
		if msg := obj.Get("message"); msg != nil && !goja.IsUndefined(msg) {
			e.Message = msg.String()
		}
		if stack := obj.Get("stack"); stack != nil && !goja.IsUndefined(stack) {
			e.Stack = stack.String()
		}
	}
	if e.Message == "" && v != nil {
		e.Message = v.String()
	}
	e.Message = fmt.Sprintf("component %s threw %s: %s", p.name, e.Type, e.Message)
	return e
}

func installConsole(vm *goja.Runtime, console Console, maxLines int) {
	lines := 0
	console_ := vm.NewObject()
	for _, level := range []string{"debug", "info", "warn", "error", "log"} {
		logLevel := level
		if level == "log" {
			logLevel = "info"
		}
		_ = console_.Set(level, func(call goja.FunctionCall) goja.Value {
			if lines >= maxLines {
				return goja.Undefined()
			}
			lines++
			parts := make([]string, len(call.Arguments))
			for i, a := range call.Arguments {
				parts[i] = describe(vm, a)
			}
			msg := strings.Join(parts, " ")
			if len(msg) > 4096 {
				msg = msg[:4096] + "…"
			}
			if lines == maxLines {
				msg += fmt.Sprintf(" (console limit of %d lines reached; further lines of this call are dropped)", maxLines)
			}
			console(logLevel, msg)
			return goja.Undefined()
		})
	}
	_ = vm.Set("console", console_)
}

// describe renders a console argument: strings as they are, the rest as JSON.
func describe(vm *goja.Runtime, v goja.Value) string {
	if s, ok := v.Export().(string); ok {
		return s
	}
	if obj, ok := v.(*goja.Object); ok {
		if stringify, ok := goja.AssertFunction(vm.Get("JSON").ToObject(vm).Get("stringify")); ok {
			if s, err := stringify(goja.Undefined(), obj); err == nil && !goja.IsUndefined(s) {
				return s.String()
			}
		}
	}
	return v.String()
}

// guardMemory watches the heap while a call runs and calls stop once the live heap has
// grown by more than limit since the call began. Allocation shows at once in the
// heap's object bytes, which also count garbage: when they have grown past the limit, a
// collection (at most one every 250 ms in the whole process) tells what is really
// live. The baseline is the live heap of the last collection before the call; when a
// later collection finds less, that lower value becomes the baseline (the first one
// was stale), so the growth is never under-counted by more than one round. Should
// collections lag behind a script that allocates faster than they finish, allocation
// past a hard ceiling (eight times the limit, at least 1 GiB) stops it anyway.
func guardMemory(done <-chan struct{}, limit int64, stop func(grew int64)) {
	baseline, allocated := heapLive(), heapObjects()
	ceiling := allocated + max(8*limit, 1<<30)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		objects := heapObjects()
		if objects > ceiling {
			stop(objects - baseline)
			return
		}
		if objects-allocated <= limit {
			continue
		}
		collect()
		live := heapLive()
		if grew := live - baseline; grew > limit {
			stop(grew)
			return
		}
		baseline = min(baseline, live)
		allocated = heapObjects() // garbage, not this call: look again from here
	}
}

var lastCollect atomic.Int64

// collect runs a garbage collection unless one was forced in the last 250 ms.
func collect() {
	now := time.Now().UnixNano()
	last := lastCollect.Load()
	if now-last < int64(250*time.Millisecond) || !lastCollect.CompareAndSwap(last, now) {
		return
	}
	runtime.GC()
}

func heapLive() int64    { return readMetric("/gc/heap/live:bytes") }
func heapObjects() int64 { return readMetric("/memory/classes/heap/objects:bytes") }

func readMetric(name string) int64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
