package component

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Pool runs component calls in sandbox processes: Size children, each the service's
// own binary re-executed (see child.go), each running one call at a time.
//
// What the parent enforces from outside, where no script can reach:
//   - time: a child whose call has not answered Timeout + Grace after it began is
//     killed (a native loop cannot be interrupted from inside); the call fails with
//     ComponentTimeout;
//   - memory: while a call runs its child's resident memory is read every
//     watchInterval from /proc/<pid>/statm, and the child is killed once it passes its
//     idle size + Memory + MemoryMargin; the call fails with ComponentMemoryLimit. A
//     child also runs under RLIMIT_AS (AddressSpace), so that a single allocation
//     larger than that fails at once (the Go runtime then dies: ComponentMemoryLimit)
//     instead of touching the machine's memory first, and under GOMEMLIMIT, so that its
//     garbage collector keeps it below the kill line while the script stays in budget;
//   - CPU: children run at a lower priority (nice), with GOMAXPROCS=1, and the
//     scheduler (sched.go) gives each project at most PerProject of them.
//
// A killed or dead child fails only the call it ran and is replaced in the background;
// children are also replaced after MaxCallsPerChild calls, or when a call leaves one
// larger than its idle size + Memory/2.
type Pool struct {
	cfg PoolConfig
	exe string
	log *slog.Logger

	mu       sync.Mutex
	started  bool
	stopped  bool
	idle     []*child
	live     map[*child]struct{}
	sched    *scheduler
	spawnErr error // the last failure to start a child, until one starts
	stop     chan struct{}
	wg       sync.WaitGroup // spawners and the children's readers

	stats poolCounters
}

// PoolConfig sizes and bounds a Pool. Zero values take the defaults.
type PoolConfig struct {
	// Size is the number of children (default max(2, number of CPUs)).
	Size int
	// PerProject is the most calls of one project running at once (default Size-1, at
	// least 1), so that one project never holds every child.
	PerProject int
	// Limits bound each call.
	Limits Limits
	// Grace is how long after Timeout a child that has not answered is killed (1 s).
	Grace time.Duration
	// MemoryMargin is how far past Limits.Memory a child's resident memory may grow
	// before it is killed: room for garbage not yet collected (default Memory/2, at
	// least 32 MiB).
	MemoryMargin int64
	// AddressSpace is a child's RLIMIT_AS in bytes (default AddressSpaceFor(Memory));
	// negative for none.
	AddressSpace int64
	// Nice is the children's scheduling priority, 0 to 19 (default 10).
	Nice int
	// MaxCallsPerChild replaces a child after that many calls (default 1000).
	MaxCallsPerChild int
	// Executable is the binary to re-execute (default os.Executable()): it must call
	// RunChildIfRequested first thing.
	Executable string
	// Log receives the pool's own lines (children that die, fail to start).
	Log *slog.Logger
}

// AddressSpaceFor is the default RLIMIT_AS of a child whose calls may use memory
// bytes: 2 GiB, plus twice what memory exceeds 256 MiB. A child's Go runtime reserves
// most of its address space at start-up, whatever it then uses. Measured with this
// binary (cgo and static builds, and a test binary; GOMAXPROCS=1, re-exec): start-up
// fails at or below 750 MiB, in windows around 900 MiB and 1200-1250 MiB, and now and
// then up to 1664 MiB; 1792 MiB, 2 GiB and 2.5 GiB each started 400 times out of 400.
// Under 2 GiB a child holds 512 MiB of live data but not 640 MiB, under 2.5 GiB 1 GiB
// but not 1.25 GiB: room to spare above the kill line (idle size + 1.5 x memory).
func AddressSpaceFor(memory int64) int64 {
	return 2<<30 + 2*max(memory-256<<20, 0)
}

const (
	watchInterval  = 5 * time.Millisecond
	readyTimeout   = 10 * time.Second
	maxSpawnDelay  = 5 * time.Second
	cancelGrace    = time.Second
	minMemorySlack = 32 << 20
)

func (c PoolConfig) withDefaults() PoolConfig {
	if c.Size <= 0 {
		c.Size = DefaultPoolSize()
	}
	if c.PerProject <= 0 {
		c.PerProject = max(c.Size-1, 1)
	}
	if c.Limits == (Limits{}) {
		c.Limits = DefaultLimits
	}
	if c.Grace <= 0 {
		c.Grace = time.Second
	}
	if c.MemoryMargin <= 0 {
		c.MemoryMargin = max(c.Limits.Memory/2, minMemorySlack)
	}
	if c.AddressSpace == 0 {
		c.AddressSpace = AddressSpaceFor(c.Limits.Memory)
	}
	if c.Nice == 0 {
		c.Nice = 10
	}
	if c.MaxCallsPerChild <= 0 {
		c.MaxCallsPerChild = 1000
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// DefaultPoolSize is max(2, number of CPUs).
func DefaultPoolSize() int { return max(2, runtime.NumCPU()) }

// NewPool builds a pool; Start starts its children.
func NewPool(cfg PoolConfig) *Pool {
	cfg = cfg.withDefaults()
	return &Pool{cfg: cfg, log: cfg.Log, live: map[*child]struct{}{}, sched: newScheduler(cfg.PerProject), stop: make(chan struct{})}
}

// Start starts the children in the background and returns; calls wait for the first
// free one. It fails only when there is no binary to re-execute.
func (p *Pool) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.stopped {
		return errors.New("component pool already started")
	}
	p.exe = p.cfg.Executable
	if p.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("start component sandboxes: %w", err)
		}
		p.exe = exe
	}
	p.started = true
	for range p.cfg.Size {
		p.spawnLocked()
	}
	return nil
}

// Stop kills every child, fails the calls still waiting and returns once every
// goroutine of the pool has ended. Calls still running fail with ComponentCanceled.
// It is safe to call more than once, and without Start.
func (p *Pool) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		p.wg.Wait()
		return
	}
	p.stopped = true
	close(p.stop)
	for c := range p.live {
		c.kill()
	}
	p.idle = nil
	for _, w := range p.sched.drain() {
		w.err = errors.New("the component sandboxes are stopping")
		close(w.ready)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Call runs prog's function with input (a JSON value) in a sandbox, on behalf of
// project, and returns its result. It waits for a sandbox as long as ctx allows.
func (p *Pool) Call(ctx context.Context, project string, prog *Program, input any, console Console) (any, error) {
	in, err := json.Marshal(input)
	if err != nil {
		return nil, &Error{Type: FailureOutput, Message: fmt.Sprintf("input is not JSON: %s", err)}
	}
	queued := time.Now()
	c, err := p.acquire(ctx, project)
	if err != nil {
		msg := fmt.Sprintf("component %s waited %s for a sandbox: %s", prog.name, time.Since(queued).Round(time.Millisecond), err)
		if spawnErr := p.spawnError(); spawnErr != nil {
			msg += fmt.Sprintf(" (sandboxes cannot start: %s)", spawnErr)
		}
		return nil, &Error{Type: FailureCanceled, Retryable: true, Message: msg}
	}
	p.stats.calls.Add(1)
	out, callErr, keep := p.run(ctx, c, project, prog, in, console)
	p.release(project, c, keep)
	if callErr != nil {
		return nil, callErr
	}
	if len(out) == 0 {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, &Error{Type: FailureOutput, Message: fmt.Sprintf("component %s returned a value that is not JSON: %s", prog.name, err)}
	}
	return v, nil
}

// PoolStats counts what a pool did since it started.
type PoolStats struct {
	Calls        int64 // calls that got a sandbox
	Started      int64 // children started (including replacements)
	KilledTime   int64 // children killed at Timeout + Grace (or when a cancelled call did not stop)
	KilledMemory int64 // children killed for their resident memory
	Died         int64 // children that died by themselves during a call
	Recycled     int64 // children replaced after MaxCallsPerChild calls or growing
	Live         int   // children running now
	Idle         int   // children waiting for a call
	Waiting      int   // calls waiting for a child
}

type poolCounters struct {
	calls, started, killedTime, killedMemory, died, recycled atomic.Int64
}

// Stats is a snapshot of the counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{
		Calls: p.stats.calls.Load(), Started: p.stats.started.Load(), KilledTime: p.stats.killedTime.Load(),
		KilledMemory: p.stats.killedMemory.Load(), Died: p.stats.died.Load(), Recycled: p.stats.recycled.Load(),
		Live: len(p.live), Idle: len(p.idle), Waiting: p.sched.waiting(),
	}
}

// Pids are the process ids of the live children.
func (p *Pool) Pids() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pids []int
	for c := range p.live {
		pids = append(pids, c.pid)
	}
	return pids
}

func (p *Pool) spawnError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.spawnErr
}

// acquire waits for a child for project, as the scheduler orders.
func (p *Pool) acquire(ctx context.Context, project string) (*child, error) {
	w := &waiter{project: project, ready: make(chan struct{})}
	p.mu.Lock()
	if p.stopped || !p.started {
		p.mu.Unlock()
		return nil, errors.New("the component sandboxes are not running")
	}
	p.sched.push(w)
	p.dispatchLocked()
	p.mu.Unlock()
	select {
	case <-w.ready:
		return w.child, w.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sched.remove(w) {
		return nil, context.Cause(ctx)
	}
	<-w.ready // granted meanwhile: give it back
	if w.child != nil {
		p.sched.done(project)
		p.idle = append(p.idle, w.child)
		p.dispatchLocked()
	}
	return nil, context.Cause(ctx)
}

// dispatchLocked hands idle children to the calls the scheduler picks.
func (p *Pool) dispatchLocked() {
	for len(p.idle) > 0 {
		w := p.sched.next()
		if w == nil {
			return
		}
		w.child = p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		close(w.ready)
	}
}

// release ends a call: the child goes back to the idle ones, or is replaced.
func (p *Pool) release(project string, c *child, keep bool) {
	recycle := false
	if keep {
		c.calls++
		recycle = c.calls >= p.cfg.MaxCallsPerChild || c.rss() > c.idleRSS+p.cfg.Limits.Memory/2
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sched.done(project)
	switch {
	case p.stopped:
		c.kill()
	case keep && !recycle:
		p.idle = append(p.idle, c)
	default:
		if recycle {
			p.stats.recycled.Add(1)
		}
		c.kill()
		delete(p.live, c)
		p.spawnLocked()
	}
	p.dispatchLocked()
}

// spawnLocked starts a child in the background, retrying with backoff until it
// starts or the pool stops.
func (p *Pool) spawnLocked() {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		delay := 100 * time.Millisecond
		for {
			c, err := p.startChild()
			p.mu.Lock()
			if err == nil {
				p.spawnErr = nil
				if p.stopped {
					p.mu.Unlock()
					c.kill()
					return
				}
				p.live[c] = struct{}{}
				p.idle = append(p.idle, c)
				p.dispatchLocked()
				p.mu.Unlock()
				return
			}
			p.spawnErr = err
			p.mu.Unlock()
			p.log.Error("component sandbox did not start", "error", err, "retry_in", delay)
			select {
			case <-p.stop:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, maxSpawnDelay)
		}
	}()
}

// exited forgets a child that ended while idle (killed from outside, say), and
// replaces it. A child that ends during a call is the call's to handle (release).
func (p *Pool) exited(c *child) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.idle, c)
	if i < 0 || p.stopped {
		return
	}
	p.idle = slices.Delete(p.idle, i, i+1)
	delete(p.live, c)
	p.stats.died.Add(1)
	p.log.Warn("idle component sandbox ended", "pid", c.pid, "reason", c.exitReason())
	p.spawnLocked()
}

// child is one sandbox process.
type child struct {
	cmd     *exec.Cmd
	pid     int
	stdin   io.WriteCloser
	enc     *json.Encoder
	msgs    chan response // from the reader; closed once the process has exited
	stderr  *stderrTail
	idleRSS int64
	calls   int
	nextID  uint64

	killOnce sync.Once
	killed   chan struct{} // closed once the pool has killed it: nobody reads msgs any more
}

// startChild starts a child and waits for it to say it is ready.
func (p *Pool) startChild() (*child, error) {
	lim := p.cfg.Limits
	cmd := exec.Command(p.exe)
	// A small environment: nothing of the service's (DATABASE_URL ...) reaches the
	// process that runs tenant code.
	cmd.Env = []string{
		envChild + "=" + stageLimit,
		envNice + "=" + strconv.Itoa(p.cfg.Nice),
		envAS + "=" + strconv.FormatInt(max(p.cfg.AddressSpace, 0), 10),
		"GOMAXPROCS=1",
		"GOMEMLIMIT=" + strconv.FormatInt(lim.Memory+p.cfg.MemoryMargin/2+minMemorySlack, 10),
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Dies with the service. (Linux sends it when the thread that started the child
		// ends; the Go runtime keeps its threads, and a child whose standard input
		// closes exits after its call anyway.)
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true, // but not with a Ctrl-C meant for the service: it drains first
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	tail := &stderrTail{}
	cmd.Stderr = tail
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.exe, err)
	}
	// Lower the new process's priority at once, so that even its first start-up (before
	// it lowers its own, see child.go) yields to the service. Best effort: threads it
	// has already made keep theirs until it re-executes itself.
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, p.cfg.Nice)
	c := &child{cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, enc: json.NewEncoder(stdin), msgs: make(chan response), stderr: tail, killed: make(chan struct{})}
	p.stats.started.Add(1)
	p.wg.Add(1)
	go func() {
		c.read(stdout)
		p.exited(c)
		p.wg.Done()
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case m, ok := <-c.msgs:
		if ok && m.Ready {
			c.idleRSS = c.rss()
			return c, nil
		}
		c.kill()
		c.drain()
		return nil, fmt.Errorf("sandbox %d did not start: %s", c.pid, c.exitReason())
	case <-timer.C:
		c.kill()
		c.drain()
		return nil, fmt.Errorf("sandbox %d not ready after %s", c.pid, readyTimeout)
	case <-p.stop:
		c.kill()
		c.drain()
		return nil, errors.New("stopping")
	}
}

// read passes the child's messages on until its output ends, then reaps it.
func (c *child) read(stdout io.Reader) {
	defer close(c.msgs)
	dec := json.NewDecoder(bufio.NewReaderSize(stdout, 64<<10))
	for {
		var m response
		err := dec.Decode(&m)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.kill() // garbage on the pipe is as bad as silence
			}
			break
		}
		select {
		case c.msgs <- m:
		case <-c.killed:
		}
	}
	_ = c.cmd.Wait()
}

// drain discards messages until the child has exited and been reaped.
func (c *child) drain() {
	for range c.msgs {
	}
}

func (c *child) kill() {
	c.killOnce.Do(func() {
		close(c.killed)
		_ = c.stdin.Close()
		_ = c.cmd.Process.Kill()
	})
}

// wasKilled says whether the pool killed c.
func (c *child) wasKilled() bool {
	select {
	case <-c.killed:
		return true
	default:
		return false
	}
}

// rss is the child's resident memory in bytes (0 once it is gone).
func (c *child) rss() int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// exitReason says how a reaped child ended, with the first line of its fatal error.
func (c *child) exitReason() string {
	state := "exited"
	if ps := c.cmd.ProcessState; ps != nil {
		state = ps.String()
	}
	if line := c.stderr.fatal(); line != "" {
		return state + ": " + line
	}
	return state
}

// run sends one call to c and waits for its answer, enforcing the limits from
// outside. keep says whether c can serve another call.
func (p *Pool) run(ctx context.Context, c *child, project string, prog *Program, in []byte, console Console) (out json.RawMessage, callErr *Error, keep bool) {
	lim := p.cfg.Limits
	c.nextID++
	id := c.nextID
	if err := c.enc.Encode(request{ID: id, Name: prog.name, Code: prog.code, Input: in, Limits: lim}); err != nil {
		c.kill()
		c.drain()
		return nil, p.died(c, project, prog, 0), false
	}
	killAfter := time.Now().Add(lim.Timeout + p.cfg.Grace)
	deadline := time.NewTimer(time.Until(killAfter))
	defer deadline.Stop()
	watch := time.NewTicker(watchInterval)
	defer watch.Stop()
	killAt := c.idleRSS + lim.Memory + p.cfg.MemoryMargin
	var peak int64
	lines := 0
	done := ctx.Done()
	for {
		select {
		case m, ok := <-c.msgs:
			switch {
			case !ok:
				return nil, p.died(c, project, prog, peak), false
			case m.ID != id:
			case m.Console != nil:
				if lines < lim.MaxConsoleLines && console != nil {
					console(m.Console.Level, m.Console.Message)
				}
				lines++
			case m.Done:
				return m.Output, m.Error, true
			}
		case <-watch.C:
			rss := c.rss()
			peak = max(peak, rss)
			if rss > killAt {
				c.kill()
				c.drain()
				p.stats.killedMemory.Add(1)
				p.log.Info("component sandbox killed: memory", "project_id", project, "component", prog.name, "pid", c.pid, "rss_mib", rss>>20)
				return nil, &Error{Type: FailureMemory, Message: fmt.Sprintf(
					"component %s was stopped: its sandbox's memory grew to %d MiB, past the limit of %d MiB for a call (%d MiB idle + %d MiB + %d MiB margin)",
					prog.name, rss>>20, killAt>>20, c.idleRSS>>20, lim.Memory>>20, p.cfg.MemoryMargin>>20)}, false
			}
		case <-deadline.C:
			c.kill()
			c.drain()
			p.stats.killedTime.Add(1)
			if ctx.Err() != nil {
				return nil, &Error{Type: FailureCanceled, Retryable: true, Message: fmt.Sprintf("component %s interrupted: %s", prog.name, context.Cause(ctx))}, false
			}
			p.log.Info("component sandbox killed: time", "project_id", project, "component", prog.name, "pid", c.pid)
			e := prog.timeout(lim.Timeout)
			e.Message += " (its sandbox was killed: a built-in operation did not yield)"
			return nil, e, false
		case <-done:
			done = nil
			_ = c.enc.Encode(request{ID: id, Cancel: true})
			if soon := time.Now().Add(cancelGrace); soon.Before(killAfter) {
				deadline.Reset(cancelGrace) // the child interrupts the call; if a native loop holds it, it is killed
			}
		}
	}
}

// died describes the failure of a call whose child exited on its own.
func (p *Pool) died(c *child, project string, prog *Program, peak int64) *Error {
	p.mu.Lock()
	stopping := p.stopped
	p.mu.Unlock()
	reason := c.exitReason()
	if stopping {
		return &Error{Type: FailureCanceled, Retryable: true, Message: fmt.Sprintf("component %s interrupted: the service is stopping", prog.name)}
	}
	p.stats.died.Add(1)
	p.log.Warn("component sandbox died during a call", "project_id", project, "component", prog.name, "pid", c.pid, "reason", reason, "peak_rss_mib", peak>>20)
	if c.stderr.outOfMemory() || !c.wasKilled() && killedBySystem(c.cmd.ProcessState) {
		return &Error{Type: FailureMemory, Message: fmt.Sprintf("component %s exhausted its sandbox's memory (limit %d MiB): %s", prog.name, p.cfg.Limits.Memory>>20, reason)}
	}
	return &Error{Type: FailureCrashed, Retryable: true, Message: fmt.Sprintf("component %s: its sandbox died: %s", prog.name, reason)}
}

// killedBySystem: SIGKILL that the pool did not send is the kernel's OOM killer.
func killedBySystem(ps *os.ProcessState) bool {
	if ps == nil {
		return false
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// stderrTail keeps the beginning of a child's standard error (where the Go runtime
// writes "fatal error: ...") and discards the rest.
type stderrTail struct {
	mu   sync.Mutex
	head []byte
}

const stderrKeep = 4 << 10

func (t *stderrTail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := min(len(b), stderrKeep-len(t.head)); n > 0 {
		t.head = append(t.head, b[:n]...)
	}
	return len(b), nil
}

func (t *stderrTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.head)
}

// fatal is the first line that says why the process died.
func (t *stderrTail) fatal() string {
	lines := strings.Split(t.String(), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "runtime: ") || strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "sandbox:") {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(lines[0])
}

func (t *stderrTail) outOfMemory() bool {
	s := t.String()
	return strings.Contains(s, "out of memory") || strings.Contains(s, "cannot allocate memory") ||
		strings.Contains(s, "stack exceeds") || strings.Contains(s, "failed to reserve")
}
