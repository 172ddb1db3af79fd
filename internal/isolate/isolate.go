// Package isolate runs functions that parse tenant code (esbuild, goja's parser) in a
// child process, so that what kills a parser kills the child and not the service.
//
// The parsers are recursive descent: a 1 MiB module of nested brackets needs more than
// the Go runtime's 1 GB stack limit, and a Go stack overflow is a fatal error, not a
// panic that a recover could catch. In a child it is one refused compile: the child
// dies, Call returns an error that says so (ErrTooDeep), and the next call starts a new
// child.
//
// A child is the running binary re-executed with RECONCILER_ISOLATE_CHILD=1 (main, and
// TestMain of packages whose tests parse tenant code, must call RunChildIfRequested
// first thing). Functions are registered by name with Register from init functions;
// the child finds them by name in its own copy of the same binary. Children are kept
// (at most Size at once, started on demand) and serve one call at a time, JSON lines
// over standard input and output.
package isolate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Func is a function a child runs: JSON (or any bytes) in, bytes out. An error is
// returned to the caller as its message.
type Func func(in []byte) ([]byte, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Func{}
)

// Register makes f callable by name in children. Call it from an init function, so
// that the child (the same binary) has it too.
func Register(name string, f Func) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("isolate: " + name + " registered twice")
	}
	registry[name] = f
}

func lookup(name string) Func {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return registry[name]
}

const (
	envChild = "RECONCILER_ISOLATE_CHILD"
	// childMaxStack is a child's stack limit: far more than any real program's nesting
	// needs (a level costs a parser about 2 KiB), far less memory than the default 1 GB
	// that a hostile module makes a parser fill before it dies.
	childMaxStack = 128 << 20
	exitBadStart  = 3
)

// Size is how many children may run at once (calls beyond it wait).
var Size = max(1, runtime.NumCPU())

// Timeout bounds one call: a child still busy after it is killed.
var Timeout = 30 * time.Second

// readyTimeout bounds a child's start.
const readyTimeout = 10 * time.Second

type request struct {
	ID   uint64 `json:"id"`
	Name string `json:"name"`
	In   []byte `json:"in"`
}

type response struct {
	Ready bool   `json:"ready,omitempty"`
	ID    uint64 `json:"id,omitempty"`
	Out   []byte `json:"out,omitempty"`
	Error string `json:"error,omitempty"`
}

// RunChildIfRequested makes this process a child when a parent started it as one, and
// then never returns.
func RunChildIfRequested() {
	if os.Getenv(envChild) == "" {
		return
	}
	debug.SetMaxStack(childMaxStack)
	os.Exit(serve(os.Stdin, os.Stdout))
}

func serve(in io.Reader, out io.Writer) int {
	w := bufio.NewWriterSize(out, 64<<10)
	enc := json.NewEncoder(w)
	send := func(r response) bool {
		return enc.Encode(r) == nil && w.Flush() == nil
	}
	if !send(response{Ready: true}) {
		return exitBadStart
	}
	dec := json.NewDecoder(bufio.NewReaderSize(in, 64<<10))
	for {
		var r request
		if err := dec.Decode(&r); err != nil {
			return 0 // the parent closed our input, or is gone
		}
		res := response{ID: r.ID}
		if f := lookup(r.Name); f == nil {
			res.Error = fmt.Sprintf("isolate: no function %q in this binary", r.Name)
		} else if b, err := call(f, r.In); err != nil {
			res.Error = err.Error()
		} else {
			res.Out = b
		}
		if !send(res) {
			return 0
		}
		if len(r.In) > 64<<10 {
			debug.FreeOSMemory() // a big input leaves big garbage: give it back while idle
		}
	}
}

// call runs f; its panic is its error (a stack overflow is not a panic: it ends the child).
func call(f Func, in []byte) (out []byte, err error) {
	defer func() {
		if x := recover(); x != nil {
			err = fmt.Errorf("the parser failed: %v", x)
		}
	}()
	return f(in)
}

// ErrTooDeep is what Call wraps when the child ran out of stack: the code nests too
// deeply to be parsed.
var ErrTooDeep = errors.New("the code nests too deeply to be parsed")

// ErrCrashed is what Call wraps when the child died otherwise (or did not answer in
// time and was killed).
var ErrCrashed = errors.New("the parser's process died")

// Call runs the function registered as name with in, in a child, and returns its
// output. It waits for a free child as long as ctx allows.
func Call(ctx context.Context, name string, in []byte) ([]byte, error) {
	c, err := pool.acquire(ctx)
	if err != nil {
		return nil, err
	}
	out, err, keep := c.call(ctx, name, in)
	pool.release(c, keep)
	return out, err
}

// children is the set of running children.
type children struct {
	mu      sync.Mutex
	idle    []*child
	running int
	wake    chan struct{} // signalled when a child is released
}

var pool = &children{wake: make(chan struct{}, 1)}

func (p *children) acquire(ctx context.Context) (*child, error) {
	for {
		p.mu.Lock()
		if n := len(p.idle); n > 0 {
			c := p.idle[n-1]
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			return c, nil
		}
		if p.running < Size {
			p.running++
			p.mu.Unlock()
			c, err := start()
			if err != nil {
				p.release(nil, false)
				return nil, err
			}
			return c, nil
		}
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// release gives c back (keep) or counts it gone.
func (p *children) release(c *child, keep bool) {
	p.mu.Lock()
	if keep {
		p.idle = append(p.idle, c)
	} else {
		p.running--
		if c != nil {
			c.close()
			_ = c.stderr.Close()
		}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// child is one running child. An idle child costs its process only: no goroutine
// waits on it (calls read its answers themselves), so it outlives nothing it should not.
type child struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stdout *os.File
	dec    *json.Decoder
	stderr *os.File // an unlinked file: a dying child never blocks writing its trace
	nextID uint64
}

func start() (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("isolate: %w", err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errF, err := os.CreateTemp("", "isolate-stderr-")
	if err == nil {
		err = os.Remove(errF.Name())
	}
	if err != nil {
		for _, f := range []*os.File{inR, inW, outR, outW} {
			f.Close()
		}
		return nil, fmt.Errorf("isolate: %w", err)
	}
	// -test.run=^$: a test binary whose TestMain does not call RunChildIfRequested
	// runs no test and exits, instead of running them all again.
	cmd := exec.Command(exe, "-test.run=^$")
	// Nothing of the service's environment (DATABASE_URL ...) reaches the child.
	cmd.Env = []string{envChild + "=1", "GOMAXPROCS=1"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errF
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errF.Close()
		return nil, fmt.Errorf("isolate: start %s: %w", exe, err)
	}
	c := &child{cmd: cmd, stdin: inW, stdout: outR, dec: json.NewDecoder(bufio.NewReaderSize(outR, 64<<10)), stderr: errF}
	var ready response
	_ = outR.SetReadDeadline(time.Now().Add(readyTimeout))
	if err := c.dec.Decode(&ready); err != nil || !ready.Ready {
		c.close()
		reason := c.reason()
		_ = c.stderr.Close()
		return nil, fmt.Errorf("isolate: the parser's process did not start (does main call isolate.RunChildIfRequested?): %s", reason)
	}
	return c, nil
}

// call sends one request and reads its answer; keep says whether c can serve more.
func (c *child) call(ctx context.Context, name string, in []byte) (out []byte, err error, keep bool) {
	c.nextID++
	id := c.nextID
	_ = c.stdin.SetWriteDeadline(time.Now().Add(Timeout))
	if err := json.NewEncoder(c.stdin).Encode(request{ID: id, Name: name, In: in}); err != nil {
		return nil, c.died(ctx, err), false
	}
	_ = c.stdout.SetReadDeadline(time.Now().Add(Timeout))
	// A canceled ctx ends the read at once (and the child: its answer is not awaited).
	stop := context.AfterFunc(ctx, func() { _ = c.stdout.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		var m response
		if err := c.dec.Decode(&m); err != nil {
			return nil, c.died(ctx, err), false
		}
		switch {
		case m.ID != id:
			continue
		case m.Error != "":
			return nil, errors.New(m.Error), true
		default:
			return m.Out, nil, true
		}
	}
}

// died describes why a child stopped answering (it is then closed).
func (c *child) died(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	timedOut := errors.Is(err, os.ErrDeadlineExceeded)
	c.close()
	switch {
	case timedOut:
		return fmt.Errorf("%w: still parsing after %s, killed", ErrCrashed, Timeout)
	case strings.Contains(c.stderrHead(), "stack exceeds") || strings.Contains(c.stderrHead(), "stack overflow"):
		return ErrTooDeep
	}
	return fmt.Errorf("%w: %s", ErrCrashed, c.reason())
}

// close ends the child (closing its input ends it; a busy one is killed) and reaps it.
// It may be called again.
func (c *child) close() {
	_ = c.stdin.Close()
	_ = c.stdout.Close()
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// stderrHead is the beginning of what the child wrote to its standard error.
func (c *child) stderrHead() string {
	b := make([]byte, 4<<10)
	n, _ := c.stderr.ReadAt(b, 0)
	return string(b[:n])
}

// reason is the first line of the child's standard error that says why it ended.
func (c *child) reason() string {
	for _, l := range strings.Split(c.stderrHead(), "\n") {
		if strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "runtime: ") || strings.HasPrefix(l, "panic:") {
			return strings.TrimSpace(l)
		}
	}
	if s := c.cmd.ProcessState; s != nil {
		return s.String()
	}
	return "no reason given"
}
