package component

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/flowbuilder/reconciler/internal/isolate"
)

// The sandbox child: the service's binary (or a test binary, or the bench) started by a
// Pool with RECONCILER_SANDBOX_CHILD set. RunChildIfRequested, called first thing in
// main, turns such a process into a child and never returns.
//
// Start-up is in two stages, because the Go runtime sizes its address space
// reservations when it starts: a limit set later makes it fail at random.
//  1. RECONCILER_SANDBOX_CHILD=limit: lower this thread's priority (nice), set
//     RLIMIT_AS and re-execute the binary with RECONCILER_SANDBOX_CHILD=serve. The
//     new image starts on this thread, so its runtime starts under the limit and every
//     thread it creates inherits the priority.
//  2. RECONCILER_SANDBOX_CHILD=serve: read requests from standard input and answer on
//     standard output, one JSON object a line, one call at a time, until standard
//     input ends (the parent is gone or closed it).
//
// The protocol, parent to child: {"id", "name", "code", "input", "limits"} runs a
// call; {"id", "cancel": true} interrupts call id if it still runs. Child to parent:
// {"ready": true} once, then for each call any number of {"id", "console"} and one
// {"id", "done": true, "output" | "error"}.

const (
	envChild     = "RECONCILER_SANDBOX_CHILD"
	envAS        = "RECONCILER_SANDBOX_ADDRESS_SPACE" // bytes of RLIMIT_AS; 0 for none
	envNice      = "RECONCILER_SANDBOX_NICE"
	stageLimit   = "limit"
	stageServe   = "serve"
	exitBadStart = 3
)

type request struct {
	ID     uint64          `json:"id"`
	Cancel bool            `json:"cancel,omitempty"`
	Name   string          `json:"name,omitempty"`
	Code   string          `json:"code,omitempty"`
	Input  json.RawMessage `json:"input,omitempty"`
	Limits Limits          `json:"limits"`
}

type response struct {
	Ready   bool            `json:"ready,omitempty"`
	ID      uint64          `json:"id,omitempty"`
	Console *consoleLine    `json:"console,omitempty"`
	Done    bool            `json:"done,omitempty"`
	Output  json.RawMessage `json:"output,omitempty"`
	Error   *Error          `json:"error,omitempty"`
}

type consoleLine struct {
	Level   string `json:"level"`
	Message string `json:"message"`
}

// RunChildIfRequested makes this process a sandbox child when a Pool started it, and
// then never returns. Call it first thing in main, and in TestMain of every package
// whose tests start a Pool (the test binary is what the pool re-executes).
//
// It also serves as the hook of internal/isolate's children (the parsers of tenant
// code), which the same binary re-executes.
func RunChildIfRequested() {
	isolate.RunChildIfRequested()
	switch os.Getenv(envChild) {
	case "":
		return
	case stageLimit:
		os.Exit(limitAndReexec())
	case stageServe:
		os.Exit(serve(os.Stdin, os.Stdout))
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: not a sandbox stage\n", envChild, os.Getenv(envChild))
		os.Exit(exitBadStart)
	}
}

// limitAndReexec is stage 1.
func limitAndReexec() int {
	runtime.LockOSThread() // the priority is a property of this thread, which exec keeps
	if n, _ := strconv.Atoi(os.Getenv(envNice)); n != 0 {
		// On Linux PRIO_PROCESS with who = 0 sets the calling thread only.
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, n); err != nil {
			fmt.Fprintln(os.Stderr, "sandbox: setpriority:", err)
			return exitBadStart
		}
	}
	if n, _ := strconv.ParseUint(os.Getenv(envAS), 10, 64); n > 0 {
		lim := syscall.Rlimit{Cur: n, Max: n}
		if err := syscall.Setrlimit(syscall.RLIMIT_AS, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "sandbox: setrlimit:", err)
			return exitBadStart
		}
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return exitBadStart
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, envChild+"=") })
	err = syscall.Exec(exe, []string{exe}, append(env, envChild+"="+stageServe))
	fmt.Fprintln(os.Stderr, "sandbox: re-exec:", err)
	return exitBadStart
}

// freeAfter: a child whose heap holds more than this after a call returns the garbage
// to the system at once.
const freeAfter = 32 << 20

// serve is stage 2: the request loop.
func serve(in io.Reader, out io.Writer) int {
	w := bufio.NewWriterSize(out, 64<<10)
	enc := json.NewEncoder(w)
	send := func(r response) {
		if enc.Encode(r) == nil {
			_ = w.Flush()
		}
	}
	calls := make(chan request)
	cancels := make(chan uint64, 16)
	go func() {
		defer close(calls)
		dec := json.NewDecoder(bufio.NewReaderSize(in, 64<<10))
		for {
			var r request
			if err := dec.Decode(&r); err != nil {
				return // the parent is gone: so are we
			}
			if r.Cancel {
				select {
				case cancels <- r.ID:
				default:
				}
				continue
			}
			calls <- r
		}
	}()

	programs := programCache{}
	var next *jsRuntime // prepared while idle
	send(response{Ready: true})
	for r := range calls {
		if next == nil || next.lim != r.Limits {
			var err error
			if next, err = newRuntime(r.Limits); err != nil {
				send(response{ID: r.ID, Done: true, Error: &Error{Type: FailureCrashed, Retryable: true, Message: err.Error()}})
				next = nil
				continue
			}
		}
		rt := next
		next = nil
		ctx, cancel := context.WithCancelCause(context.Background())
		stop := make(chan struct{})
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			for {
				select {
				case id := <-cancels:
					if id == r.ID {
						cancel(errors.New("the activity ended first"))
						return
					}
				case <-stop:
					return
				}
			}
		}()
		res := serveCall(ctx, &programs, rt, r, func(level, msg string) {
			send(response{ID: r.ID, Console: &consoleLine{Level: level, Message: msg}})
		})
		close(stop)
		<-watched
		cancel(nil)
		send(res)
		if heapObjects() > freeAfter {
			debug.FreeOSMemory() // what a big call left is garbage: give it back
		}
		var err error
		if next, err = newRuntime(r.Limits); err != nil {
			next = nil
		}
	}
	return 0
}

// serveCall runs one request; a panic of the interpreter fails the call, not the child.
func serveCall(ctx context.Context, programs *programCache, rt *jsRuntime, r request, console Console) (res response) {
	res = response{ID: r.ID, Done: true}
	defer func() {
		if x := recover(); x != nil {
			res.Output = nil
			res.Error = &Error{Type: FailureCrashed, Retryable: true, Message: fmt.Sprintf("component %s: the interpreter failed: %v", r.Name, x)}
		}
	}()
	p, err := programs.get(r.Name, r.Code)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Type: FailureInvalid, Message: err.Error()}
		}
		res.Error = e
		return res
	}
	input := string(r.Input)
	if input == "" {
		input = "null"
	}
	out, err := p.runIn(ctx, rt, input, console)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Type: defaultThrownError, Retryable: true, Message: err.Error()}
		}
		res.Error = e
		return res
	}
	if out != "" {
		res.Output = json.RawMessage(out)
	}
	return res
}

// programCache keeps compiled programs by name and code, so that a child compiles a
// component once (a goja.Program is immutable and runs in any runtime). Compiling
// happens within the call's time limit, as the parent sees it.
type programCache map[[sha256.Size]byte]*Program

const maxCachedPrograms = 256

func (c programCache) get(name, code string) (*Program, error) {
	key := sha256.Sum256([]byte(name + "\x00" + code))
	if p, ok := c[key]; ok {
		return p, nil
	}
	p, err := Compile(name, code)
	if err != nil {
		return nil, err
	}
	if _, err := p.compile(); err != nil {
		return nil, err
	}
	if len(c) >= maxCachedPrograms {
		clear(c)
	}
	c[key] = p
	return p, nil
}
