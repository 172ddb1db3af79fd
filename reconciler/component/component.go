// Package component runs the builder's custom activities: JavaScript, in goja.
//
// Every call gets a fresh interpreter, so nothing survives between calls, between
// workflows or between projects. The interpreter has no file system, network, process,
// module loader or timers: only the ECMAScript built-ins and a console that writes to the
// worker's log. A call is bounded by a time limit that really interrupts the script
// (including `while (true) {}`), by a call-stack depth, by size limits on the built-ins
// that allocate in one step (String.prototype.repeat, padStart, padEnd) and by a memory
// guard that interrupts a call while the process's live heap grows past the limit.
//
// The memory guard measures the process, not the call: goja cannot account memory per
// interpreter. A call that runs while other code of the process retains more than the
// limit can be interrupted with it; its activity then fails with ComponentMemoryLimit
// and is retried by its node's retry policy.
package component

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dlclark/regexp2/v2"
	"github.com/dop251/goja"
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
	// Memory is how far the process's live heap may grow while the call runs.
	Memory int64
	// MaxStringBytes caps the strings repeat/padStart/padEnd may build.
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

// Failure types of a call, as Temporal application error types. A `throw` fails with
// the thrown error's name (Error, TypeError, or a custom name), so that retry policies
// can list it in non_retryable_errors.
const (
	FailureTimeout     = "ComponentTimeout"
	FailureMemory      = "ComponentMemoryLimit"
	FailureInvalid     = "ComponentInvalid" // does not compile or defines no such function
	FailureOutput      = "ComponentOutputInvalid"
	FailureUnsettled   = "ComponentPromiseUnsettled"
	FailureCanceled    = "ComponentCanceled"
	defaultThrownError = "Error"
)

// Error is a failed call.
type Error struct {
	Type      string // one of the Failure* types, or the thrown error's name
	Message   string
	Stack     string
	Retryable bool
}

func (e *Error) Error() string { return e.Message }

// Console receives console.log and friends: level is debug, info, warn or error.
type Console func(level, message string)

// Program is a component's compiled code.
type Program struct {
	name string
	prog *goja.Program
}

// Compile checks the syntax of a component's code.
func Compile(name, code string) (*Program, error) {
	prog, err := goja.Compile(name+".js", code, false)
	if err != nil {
		return nil, fmt.Errorf("component %s does not compile: %s", name, oneLine(err.Error()))
	}
	return &Program{name: name, prog: prog}, nil
}

// Call runs the component's function with input (a JSON value) and returns its result
// (a JSON value). A returned promise is awaited.
func (p *Program) Call(ctx context.Context, input any, lim Limits, console Console) (any, error) {
	in, err := json.Marshal(input)
	if err != nil {
		return nil, &Error{Type: FailureOutput, Message: fmt.Sprintf("input is not JSON: %s", err)}
	}
	vm := goja.New()
	vm.SetMaxCallStackSize(2000)
	installConsole(vm, p.name, console, lim.MaxConsoleLines)
	if err := limitBuiltins(vm, lim.MaxStringBytes); err != nil {
		return nil, err
	}

	// Everything that can interrupt the script: the time limit, the activity's
	// cancellation and the memory guard. Interrupt is safe from any goroutine.
	done := make(chan struct{})
	defer close(done)
	timer := time.AfterFunc(lim.Timeout, func() {
		vm.Interrupt(&Error{Type: FailureTimeout, Retryable: true,
			Message: fmt.Sprintf("component %s ran longer than %s and was stopped", p.name, lim.Timeout)})
	})
	defer timer.Stop()
	stopCancel := context.AfterFunc(ctx, func() {
		vm.Interrupt(&Error{Type: FailureCanceled, Retryable: true,
			Message: fmt.Sprintf("component %s interrupted: %s", p.name, context.Cause(ctx))})
	})
	defer stopCancel()
	if lim.Memory > 0 {
		go guardMemory(done, lim.Memory, func(grew int64) {
			vm.Interrupt(&Error{Type: FailureMemory, Retryable: true,
				Message: fmt.Sprintf("component %s was stopped: the heap grew by %d MiB while it ran (limit %d MiB)", p.name, grew>>20, lim.Memory>>20)})
		})
	}

	if _, err := vm.RunProgram(p.prog); err != nil {
		return nil, p.failure(err)
	}
	fn, ok := goja.AssertFunction(vm.Get(p.name))
	if !ok {
		return nil, &Error{Type: FailureInvalid, Message: fmt.Sprintf("component %s: the code does not define a function named %s", p.name, p.name)}
	}
	parse, _ := goja.AssertFunction(vm.Get("JSON").ToObject(vm).Get("parse"))
	arg, err := parse(goja.Undefined(), vm.ToValue(string(in)))
	if err != nil {
		return nil, p.failure(err)
	}
	res, err := fn(goja.Undefined(), arg)
	if err != nil {
		return nil, p.failure(err)
	}
	if promise, ok := res.Export().(*goja.Promise); ok {
		switch promise.State() {
		case goja.PromiseStateFulfilled:
			res = promise.Result()
		case goja.PromiseStateRejected:
			return nil, p.thrown(promise.Result())
		default:
			return nil, &Error{Type: FailureUnsettled, Message: fmt.Sprintf("component %s returned a promise that never settles (there are no timers or I/O to wait for)", p.name)}
		}
	}
	return p.output(vm, res, lim.MaxOutputBytes)
}

// output turns the script's result into a JSON value through JSON.stringify, so that
// what the workflow sees is exactly what JavaScript would serialise.
func (p *Program) output(vm *goja.Runtime, v goja.Value, max int) (any, error) {
	if v == nil || goja.IsUndefined(v) || goja.IsNull(v) {
		return nil, nil
	}
	stringify, _ := goja.AssertFunction(vm.Get("JSON").ToObject(vm).Get("stringify"))
	s, err := stringify(goja.Undefined(), v)
	if err != nil {
		return nil, p.failure(err)
	}
	if goja.IsUndefined(s) {
		return nil, nil // functions, symbols
	}
	text := s.String()
	if max > 0 && len(text) > max {
		return nil, &Error{Type: FailureOutput, Message: fmt.Sprintf("component %s returned %d bytes of JSON; the limit is %d", p.name, len(text), max)}
	}
	var out any
	if err := json.Unmarshal([]byte(text), &out); err != nil {
		return nil, &Error{Type: FailureOutput, Message: fmt.Sprintf("component %s returned a value that is not JSON: %s", p.name, err)}
	}
	return out, nil
}

// failure translates what goja returned into an Error.
func (p *Program) failure(err error) error {
	var interrupted *goja.InterruptedError
	if errors.As(err, &interrupted) {
		if e, ok := interrupted.Value().(*Error); ok {
			return e
		}
		return &Error{Type: FailureTimeout, Retryable: true, Message: fmt.Sprintf("component %s interrupted", p.name)}
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

func installConsole(vm *goja.Runtime, name string, console Console, maxLines int) {
	lines := 0
	console_ := vm.NewObject()
	for _, level := range []string{"debug", "info", "warn", "error", "log"} {
		logLevel := level
		if level == "log" {
			logLevel = "info"
		}
		_ = console_.Set(level, func(call goja.FunctionCall) goja.Value {
			if console == nil || lines >= maxLines {
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

// limitBuiltins caps the built-ins that can allocate a huge string in one step, which
// no interrupt can stop once it has started.
func limitBuiltins(vm *goja.Runtime, maxBytes int) error {
	if maxBytes <= 0 {
		return nil
	}
	proto := vm.Get("String").ToObject(vm).Get("prototype").ToObject(vm)
	for _, name := range []string{"repeat", "padStart", "padEnd"} {
		orig, ok := goja.AssertFunction(proto.Get(name))
		if !ok {
			continue
		}
		method := name
		err := proto.Set(name, func(call goja.FunctionCall) goja.Value {
			this := call.This.String()
			want := len(this)
			if len(call.Arguments) > 0 {
				n := call.Arguments[0].ToFloat()
				switch method {
				case "repeat":
					want = int(min(float64(len(this))*n, float64(maxBytes)+1))
				default:
					want = int(min(n, float64(maxBytes)+1))
				}
			}
			if want > maxBytes {
				rangeError, err := vm.New(vm.Get("RangeError"), vm.ToValue(fmt.Sprintf("String.prototype.%s would build a string over %d MiB", method, maxBytes>>20)))
				if err != nil {
					panic(err)
				}
				panic(rangeError)
			}
			v, err := orig(call.This, call.Arguments...)
			if err != nil {
				panic(err)
			}
			return v
		})
		if err != nil {
			return err
		}
	}
	return nil
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
