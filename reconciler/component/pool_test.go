package component

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The test binary is what the pools of these tests re-execute as their children.
func TestMain(m *testing.M) {
	RunChildIfRequested()
	goleak.VerifyTestMain(m)
}

func startPool(t *testing.T, cfg PoolConfig) *Pool {
	t.Helper()
	p := NewPool(cfg)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func compile(t *testing.T, name, code string) *Program {
	t.Helper()
	p, err := Compile(name, code)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLimits() Limits {
	lim := DefaultLimits
	lim.Timeout = time.Second
	lim.Memory = 64 << 20
	return lim
}

func TestSandboxCallsBehaveLikeInProcessCalls(t *testing.T) {
	p := startPool(t, PoolConfig{Size: 2, Limits: testLimits()})
	ctx := context.Background()
	add := compile(t, "add", `function add(x) { return {sum: x.a + x.b, list: [1, "two", null]} }`)
	out, err := p.Call(ctx, "a", add, map[string]any{"a": 2, "b": 3}, nil)
	if want := map[string]any{"sum": 5.0, "list": []any{1.0, "two", nil}}; err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("add: %#v, %v", out, err)
	}
	later := compile(t, "later", `async function later(x) { return await Promise.resolve(x * 2) + 1 }`)
	if out, err := p.Call(ctx, "a", later, 20, nil); err != nil || out != 41.0 {
		t.Fatalf("async: %#v, %v", out, err)
	}
	check := compile(t, "check", `class ValidationError extends Error { constructor(m) { super(m); this.name = "ValidationError" } }
		function check() { throw new ValidationError("email is required") }`)
	_, err = p.Call(ctx, "a", check, nil, nil)
	var e *Error
	if !errors.As(err, &e) || e.Type != "ValidationError" || !strings.Contains(e.Message, "email is required") || !e.Retryable || !strings.Contains(e.Stack, "check") {
		t.Fatalf("throw: %#v", err)
	}
	if out, err := p.Call(ctx, "a", compile(t, "nothing", `function nothing() {}`), nil, nil); err != nil || out != nil {
		t.Fatalf("undefined: %#v, %v", out, err)
	}
	if _, err := p.Call(ctx, "a", compile(t, "g", `function h() {}`), nil, nil); failureType(err) != FailureInvalid {
		t.Fatalf("no such function: %v", err)
	}

	var mu sync.Mutex
	var lines []string
	talk := compile(t, "talk", `function talk(x) { console.log("hello", x); console.error({bad: true}); for (let i = 0; i < 300; i++) console.info(i) }`)
	if _, err := p.Call(ctx, "a", talk, "world", func(level, msg string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, level+": "+msg)
	}); err != nil {
		t.Fatal(err)
	}
	if len(lines) != DefaultLimits.MaxConsoleLines || lines[0] != "info: hello world" || lines[1] != `error: {"bad":true}` || !strings.Contains(lines[len(lines)-1], "console limit") {
		t.Fatalf("console: %d lines, first %q", len(lines), lines[:2])
	}

	// Nothing survives from one call to the next, in the same child or another.
	count := compile(t, "count", `var n = 0; function count() { globalThis.seen = (globalThis.seen || 0) + 1; n++; return [n, globalThis.seen] }`)
	for i := range 4 {
		if out, err := p.Call(ctx, "a", count, nil, nil); err != nil || !reflect.DeepEqual(out, []any{1.0, 1.0}) {
			t.Fatalf("call %d: %#v, %v (state leaked between calls)", i, out, err)
		}
	}
}

// Cases that a fresh interpreter cannot stop by itself: the parent does. Two pools:
// one whose time limit is short, for the cases that should run out of time, and one
// whose time limit is long, so that the memory cases run out of memory first even on
// a loaded machine (the limit is wall-clock time; the children run at nice 10).
func TestSandboxHostileCode(t *testing.T) {
	lim := testLimits()
	lim.Timeout = 2 * time.Second
	lim.Memory = 256 << 20 // 10n ** 40000000n holds about 70 MiB while it runs: let time stop it
	short := startPool(t, PoolConfig{Size: 2, Limits: lim, Grace: 300 * time.Millisecond})
	lim.Timeout = time.Minute
	lim.Memory = 32 << 20
	long := startPool(t, PoolConfig{Size: 2, Limits: lim})
	for _, p := range []*Pool{short, long} {
		eventually(t, 30*time.Second, "children did not start", func() bool { return p.Stats().Idle == 2 })
	}
	before := selfRSS()
	cases := []struct {
		name, code, wantType, wantText string
		maxTook                        time.Duration
	}{
		{"typed array of 40 GB", `function f() { return new Uint8Array(40e9).length }`, "RangeError", "would allocate", 5 * time.Second},
		{"typed array of 3 GB, filled", `function f() { return new Uint8Array(3e9).fill(1).length }`, "RangeError", "would allocate", 5 * time.Second},
		{"sparse join", `function f() { return new Array(2.5e8).join("abcdefgh").length }`, "RangeError", "Array.prototype.join", 5 * time.Second},
		{"string doubling", `function f() { let s = "x"; for (;;) s += s }`, FailureMemory, "", 20 * time.Second},
		{"object flood", `function f() { const o = {}; for (let i = 0; ; i++) o["k" + i] = {i} }`, FailureMemory, "", 20 * time.Second},
		{"native amplification", `function f() { return "a".repeat(1 << 20).replaceAll("a", "b".repeat(1 << 12)).length }`, FailureMemory, "", 20 * time.Second},
		{"one huge BigInt", `function f() { return typeof (1n << 40000000000n) }`, FailureMemory, "", 20 * time.Second},
		{"native loop", `function f() { return typeof (10n ** 40000000n) }`, FailureTimeout, "its sandbox was killed", 4 * time.Second},
		{"endless loop", `function f() { while (true) {} }`, FailureTimeout, "ran longer than", 4 * time.Second},
		{"deep recursion", `function f() { return f() + 1 }`, "RangeError", "call stack", 5 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := short
			if c.wantType == FailureMemory {
				p = long
			}
			began := time.Now()
			_, err := p.Call(context.Background(), "hostile", compile(t, "f", c.code), nil, nil)
			took := time.Since(began)
			var e *Error
			if !errors.As(err, &e) || e.Type != c.wantType || !strings.Contains(e.Message, c.wantText) {
				t.Fatalf("got %#v after %s, want %s saying %q", err, took, c.wantType, c.wantText)
			}
			if (e.Type == FailureMemory || e.Type == FailureTimeout) && e.Retryable {
				t.Errorf("%s is retryable", e.Type)
			}
			if took > c.maxTook {
				t.Errorf("took %s, want at most %s", took, c.maxTook)
			}
			t.Logf("%s after %s: %s", e.Type, took.Round(time.Millisecond), e.Message)
		})
	}
	// The pool is whole again, and this process never held the memory.
	for _, p := range []*Pool{short, long} {
		eventually(t, 10*time.Second, "the pool did not replace its children", func() bool {
			s := p.Stats()
			return s.Live == 2 && s.Idle == 2
		})
		if out, err := p.Call(context.Background(), "hostile", compile(t, "ok", `function ok() { return 1 }`), nil, nil); err != nil || out != 1.0 {
			t.Fatalf("after the hostile calls: %v, %v", out, err)
		}
	}
	if grew := selfRSS() - before; grew > 32<<20 {
		t.Errorf("this process grew by %d MiB", grew>>20)
	}
	s, l := short.Stats(), long.Stats()
	t.Logf("stats: short %+v, long %+v", s, l)
	if s.KilledTime == 0 || l.KilledMemory+l.Died == 0 {
		t.Errorf("expected kills for time and for memory: %+v, %+v", s, l)
	}
}

func TestSandboxIsReplacedWhenItDiesWhileIdle(t *testing.T) {
	p := startPool(t, PoolConfig{Size: 1, Limits: testLimits()})
	eventually(t, 10*time.Second, "no child", func() bool { return p.Stats().Idle == 1 })
	pid := p.Pids()[0]
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the dead child was not replaced", func() bool {
		pids := p.Pids()
		return p.Stats().Idle == 1 && len(pids) == 1 && pids[0] != pid
	})
	if out, err := p.Call(context.Background(), "a", compile(t, "ok", `function ok() { return 2 }`), nil, nil); err != nil || out != 2.0 {
		t.Fatalf("after the replacement: %v, %v", out, err)
	}
}

func TestSandboxChildIsLimited(t *testing.T) {
	p := startPool(t, PoolConfig{Size: 1, Limits: testLimits()})
	eventually(t, 10*time.Second, "no child", func() bool { return p.Stats().Idle == 1 })
	pid := strconv.Itoa(p.Pids()[0])
	limits, err := os.ReadFile("/proc/" + pid + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.FormatInt(AddressSpaceFor(testLimits().Memory), 10)
	if !strings.Contains(string(limits), want) {
		t.Errorf("address space limit %s not in\n%s", want, limits)
	}
	tasks, err := os.ReadDir("/proc/" + pid + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		stat, err := os.ReadFile("/proc/" + pid + "/task/" + task.Name() + "/stat")
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		if nice := fields[16]; nice != "10" { // field 19 of stat, the 17th after the name
			t.Errorf("thread %s runs at nice %s", task.Name(), nice)
		}
	}
	environ, err := os.ReadFile("/proc/" + pid + "/environ")
	if err == nil && strings.Contains(string(environ), "DATABASE_URL") {
		t.Error("the child sees the service's environment")
	}
}

func TestSandboxCallIsCanceledWithItsContext(t *testing.T) {
	p := startPool(t, PoolConfig{Size: 1, Limits: testLimits()})
	spin := compile(t, "spin", `function spin() { for (;;) {} }`)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := p.Call(ctx, "a", spin, nil, nil)
	if failureType(err) != FailureCanceled || time.Since(began) > 3*time.Second {
		t.Fatalf("got %v after %s", err, time.Since(began))
	}
	// The child was interrupted, not killed: it serves the next call.
	eventually(t, 5*time.Second, "no idle child", func() bool { return p.Stats().Idle == 1 })
	if s := p.Stats(); s.KilledTime+s.KilledMemory+s.Died != 0 || s.Started != 1 {
		t.Fatalf("the child was replaced: %+v", s)
	}

	// A call that waits for a sandbox waits as long as its context allows.
	busy := make(chan error, 1)
	calls := p.Stats().Calls
	go func() {
		_, err := p.Call(context.Background(), "a", spin, nil, nil)
		busy <- err
	}()
	eventually(t, 5*time.Second, "the first call did not start", func() bool { return p.Stats().Calls == calls+1 })
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = p.Call(ctx, "b", compile(t, "ok", `function ok() { return 1 }`), nil, nil)
	if failureType(err) != FailureCanceled || !strings.Contains(err.Error(), "waited") {
		t.Fatalf("queued call: %v", err)
	}
	if err := <-busy; failureType(err) != FailureTimeout {
		t.Fatalf("spinning call: %v", err)
	}
}

// A project with many calls in flight holds at most PerProject sandboxes, and another
// project's call runs at once beside them.
func TestSandboxSchedulingIsFairBetweenProjects(t *testing.T) {
	lim := testLimits()
	lim.Timeout = 10 * time.Second
	p := startPool(t, PoolConfig{Size: 2, Limits: lim}) // PerProject 1
	eventually(t, 10*time.Second, "children did not start", func() bool { return p.Stats().Idle == 2 })
	busy := compile(t, "busy", `function busy() { const end = Date.now() + 1000; while (Date.now() < end) {} return 1 }`)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Call(context.Background(), "noisy", busy, nil, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	eventually(t, 5*time.Second, "the noisy calls did not queue", func() bool { return p.Stats().Waiting == 3 })
	if s := p.Stats(); s.Idle != 1 {
		t.Fatalf("the noisy project holds %d of 2 sandboxes", 2-s.Idle)
	}
	began := time.Now()
	if _, err := p.Call(context.Background(), "quiet", compile(t, "ok", `function ok() { return 1 }`), nil, nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 900*time.Millisecond { // behind any noisy call, it would take 1 s
		t.Errorf("the quiet project's call took %s beside the noisy one's queue", took)
	}
	wg.Wait()
}

func TestSchedulerTakesTurns(t *testing.T) {
	s := newScheduler(2)
	var order []string
	push := func(project string, n int) {
		for range n {
			s.push(&waiter{project: project})
		}
	}
	take := func(n int) {
		for range n {
			w := s.next()
			if w == nil {
				order = append(order, "-")
				continue
			}
			order = append(order, w.project)
		}
	}
	push("x", 5)
	push("y", 2)
	push("z", 1)
	take(6) // x, y, z, x, y, then x is at its cap of 2 and y's queue is empty
	s.done("x")
	take(1)
	s.done("y")
	s.done("y")
	take(1)
	if got := strings.Join(order, " "); got != "x y z x y - x -" {
		t.Fatalf("order %q", got)
	}
	w := &waiter{project: "y"}
	s.push(w)
	if !s.remove(w) || s.remove(w) || s.waiting() != 2 {
		t.Fatalf("remove: waiting %d", s.waiting())
	}
	if len(s.drain()) != 2 || s.waiting() != 0 || s.next() != nil {
		t.Fatal("drain left calls")
	}
}

func TestSandboxStopLeavesNothing(t *testing.T) {
	p := NewPool(PoolConfig{Size: 2, Limits: testLimits()})
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "children did not start", func() bool { return p.Stats().Idle == 2 })
	pids := p.Pids()
	spin := compile(t, "spin", `function spin() { for (;;) {} }`)
	results := make(chan error, 3)
	for _, project := range []string{"a", "b", "b"} {
		go func() {
			_, err := p.Call(context.Background(), project, spin, nil, nil)
			results <- err
		}()
	}
	eventually(t, 5*time.Second, "calls did not start", func() bool { s := p.Stats(); return s.Idle == 0 && s.Waiting == 1 })
	p.Stop()
	p.Stop()
	for range 3 {
		if err := <-results; failureType(err) != FailureCanceled {
			t.Errorf("a call running or waiting during Stop: %v", err)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child %d still exists after Stop (%v)", pid, err)
		}
	}
	if _, err := p.Call(context.Background(), "a", spin, nil, nil); failureType(err) != FailureCanceled {
		t.Errorf("a call after Stop: %v", err)
	}
	goleak.VerifyNone(t)
}

func selfRSS() int64 {
	return (&child{pid: os.Getpid()}).rss()
}

// goja's compiler folds constants: the service must not compile tenant code itself.
func TestCompileOnlyParses(t *testing.T) {
	before := selfRSS()
	for _, code := range []string{
		`const big = 1n << 40000000000n; function f() { return typeof big }`,
		`function f() { return typeof (10n ** 40000000n) }`,
	} {
		began := time.Now()
		if _, err := Compile("f", code); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(began); took > 100*time.Millisecond {
			t.Errorf("Compile took %s", took)
		}
	}
	if grew := selfRSS() - before; grew > 16<<20 {
		t.Errorf("Compile grew this process by %d MiB", grew>>20)
	}
	// What only the compiler finds fails the call.
	p := startPool(t, PoolConfig{Size: 1, Limits: testLimits()})
	prog, err := Compile("f", `let a = 1; let a = 2; function f() {}`)
	if err != nil {
		t.Skip("the parser finds redeclarations now:", err)
	}
	if _, err := p.Call(context.Background(), "a", prog, nil, nil); failureType(err) != FailureInvalid || !strings.Contains(err.Error(), "does not compile") {
		t.Fatalf("got %v", err)
	}
}

// Garbage is not live memory: a call that allocates far more than its limit over its
// life, but never holds much of it, completes.
func TestSandboxGarbageIsNotCountedAgainstTheLimit(t *testing.T) {
	lim := testLimits()
	lim.Memory = 32 << 20
	lim.Timeout = time.Minute
	p := startPool(t, PoolConfig{Size: 1, Limits: lim})
	churn := compile(t, "churn", `function churn() {
		let keep = [], n = 0;
		for (let i = 0; i < 120; i++) {
			const s = "x".repeat(1 << 20) + i;         // 1 MiB of garbage a turn
			const a = new Array(20000).fill({i});       // and some objects
			keep.push(s.length + a.length); if (keep.length > 8) keep.shift();
			n += s.length;
		}
		return n
	}`)
	out, err := p.Call(context.Background(), "a", churn, nil, nil)
	if err != nil || out != float64(120<<20)+float64(10*1+90*2+20*3) {
		t.Fatalf("got %v, %v", out, err)
	}
}

// BenchmarkSandboxCall is the cost of one trivial call through a pool (compare
// BenchmarkFreshRuntime, the same call in this process).
func BenchmarkSandboxCall(b *testing.B) {
	p := NewPool(PoolConfig{Size: 1})
	if err := p.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer p.Stop()
	prog, err := Compile("add", `function add(x) { return {sum: x.a + x.b} }`)
	if err != nil {
		b.Fatal(err)
	}
	in := map[string]any{"a": 1, "b": 2}
	for b.Loop() {
		if _, err := p.Call(context.Background(), "a", prog, in, nil); err != nil {
			b.Fatal(err)
		}
	}
}
