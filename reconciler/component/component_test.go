package component

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func call(t *testing.T, name, code string, input any, lim Limits) (any, error) {
	t.Helper()
	p, err := Compile(name, code)
	if err != nil {
		return nil, err
	}
	return p.Call(context.Background(), input, lim, nil)
}

func failureType(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Type
	}
	return ""
}

func TestCallReturnsTheFunctionsResult(t *testing.T) {
	out, err := call(t, "add", `function add(x) { return {sum: x.a + x.b, list: [1, "two", null]} }`, map[string]any{"a": 2, "b": 3}, DefaultLimits)
	want := map[string]any{"sum": 5.0, "list": []any{1.0, "two", nil}}
	if err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("got %#v, %v", out, err)
	}
}

func TestAsyncFunctionsAreAwaited(t *testing.T) {
	out, err := call(t, "later", `async function later(x) { const v = await Promise.resolve(x * 2); return v + 1 }`, 20, DefaultLimits)
	if err != nil || out != 41.0 {
		t.Fatalf("got %#v, %v", out, err)
	}
	_, err = call(t, "rejects", `async function rejects() { throw new TypeError("bad input") }`, nil, DefaultLimits)
	if failureType(err) != "TypeError" || !strings.Contains(err.Error(), "bad input") {
		t.Fatalf("rejected promise: %v", err)
	}
	_, err = call(t, "hangs", `function hangs() { return new Promise(() => {}) }`, nil, DefaultLimits)
	if failureType(err) != FailureUnsettled {
		t.Fatalf("pending promise: %v", err)
	}
}

func TestThrowBecomesAFailureNamedLikeTheError(t *testing.T) {
	_, err := call(t, "check", `
		class ValidationError extends Error { constructor(m) { super(m); this.name = "ValidationError" } }
		function check(x) { if (!x.email) throw new ValidationError("email is required"); return x }`, map[string]any{}, DefaultLimits)
	var e *Error
	if !errors.As(err, &e) || e.Type != "ValidationError" || !strings.Contains(e.Message, "email is required") || !e.Retryable {
		t.Fatalf("got %#v", err)
	}
	_, err = call(t, "str", `function str() { throw "plain string" }`, nil, DefaultLimits)
	if failureType(err) != "Error" || !strings.Contains(err.Error(), "plain string") {
		t.Fatalf("thrown string: %v", err)
	}
}

func TestHostileCode(t *testing.T) {
	lim := DefaultLimits
	lim.Timeout = 300 * time.Millisecond
	lim.Memory = 64 << 20
	cases := []struct {
		name, code, wantType, wantText string
	}{
		{"infinite loop", `function f() { while (true) {} }`, FailureTimeout, "ran longer than"},
		{"infinite loop at top level", `while (true) {} function f() {}`, FailureTimeout, "ran longer than"},
		{"huge string in one step", `function f() { return "x".repeat(1e9) }`, "RangeError", "would build a string over"},
		{"huge padEnd", `function f() { return "".padEnd(2e9, "y") }`, "RangeError", "would build a string over"},
		{"growing arrays", `function f() { const a = []; while (true) a.push(new Array(100000).fill(1)) }`, FailureMemory, "heap grew"},
		{"doubling string", `function f() { let s = "x"; for (;;) s += s }`, FailureMemory, "heap grew"},
		{"deep recursion", `function f() { return f() + 1 }`, "RangeError", "call stack"},
		{"require", `function f() { return require("fs").readFileSync("/etc/passwd") }`, "ReferenceError", "require is not defined"},
		{"process", `function f() { return process.env }`, "ReferenceError", "process is not defined"},
		{"fetch", `async function f() { return await fetch("http://example.com") }`, "ReferenceError", "fetch is not defined"},
		{"timers", `function f() { setTimeout(() => {}, 1) }`, "ReferenceError", "setTimeout is not defined"},
		{"no such function", `function g() {}`, FailureInvalid, "does not define a function named f"},
		{"catastrophic regexp", `function f() { return /^(a+)+(?=b)$/.test("a".repeat(40) + "c") }`, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lim := lim
			if c.wantType == FailureMemory {
				lim.Timeout = 20 * time.Second // let the memory guard, not the clock, stop it
			}
			began := time.Now()
			_, err := call(t, "f", c.code, nil, lim)
			took := time.Since(began)
			if c.name == "catastrophic regexp" {
				// Go's regexp refuses the lookahead, regexp2 times out (no match): either way it ends.
				if took > 5*time.Second {
					t.Fatalf("took %s", took)
				}
				return
			}
			if err == nil {
				t.Fatalf("succeeded after %s", took)
			}
			if c.wantType != "" && failureType(err) != c.wantType {
				t.Errorf("failure type %q (%v), want %q", failureType(err), err, c.wantType)
			}
			if !strings.Contains(err.Error(), c.wantText) {
				t.Errorf("message %q does not say %q", err, c.wantText)
			}
			if limit := 10 * time.Second; c.wantType != FailureMemory && took > limit || took > 3*limit {
				t.Errorf("took %s to stop", took)
			}
		})
	}
}

func TestSyntaxErrorIsReportedAtCompile(t *testing.T) {
	_, err := Compile("broken", `function broken( { return 1 }`)
	if err == nil || !strings.Contains(err.Error(), "does not compile") {
		t.Fatalf("got %v", err)
	}
}

func TestCallsShareNothing(t *testing.T) {
	p, err := Compile("count", `var n = 0; function count() { globalThis.seen = (globalThis.seen || 0) + 1; n++; return [n, globalThis.seen] }`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		out, err := p.Call(context.Background(), nil, DefaultLimits, nil)
		if err != nil || !reflect.DeepEqual(out, []any{1.0, 1.0}) {
			t.Fatalf("call %d: %#v, %v (state leaked between calls)", i, out, err)
		}
	}
}

func TestConsoleGoesToTheLogger(t *testing.T) {
	p, err := Compile("talk", `function talk(x) { console.log("hello", x); console.error({bad: true}); for (let i = 0; i < 10; i++) console.info(i) }`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	lim := DefaultLimits
	lim.MaxConsoleLines = 3
	_, err = p.Call(context.Background(), "world", lim, func(level, msg string) { got = append(got, level+": "+msg) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != "info: hello world" || got[1] != `error: {"bad":true}` || !strings.Contains(got[2], "console limit") {
		t.Fatalf("console lines: %q", got)
	}
}

func TestCancellationInterrupts(t *testing.T) {
	p, err := Compile("spin", `function spin() { for (;;) {} }`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = p.Call(ctx, nil, DefaultLimits, nil)
	if failureType(err) != FailureCanceled {
		t.Fatalf("got %v", err)
	}
}

func TestBuiltinCapsRefuseBeforeAllocating(t *testing.T) {
	cases := []struct{ name, code, want string }{
		{"typed array of 40 GB", `function f() { return new Uint8Array(40e9).length }`, "would allocate"},
		{"typed array of 3 GB, filled", `function f() { return new Uint8Array(3e9).fill(1).length }`, "would allocate"},
		{"typed arrays over the budget in steps", `function f() { const a = []; for (;;) a.push(new Float64Array(1 << 20)) }`, "would allocate"},
		{"array buffer", `function f() { return new ArrayBuffer(2 ** 40).byteLength }`, "would allocate"},
		{"subclass", `class Big extends Uint8Array {} function f() { return new Big(40e9).length }`, "would allocate"},
		{"through .constructor", `function f() { const C = new Int32Array(1).constructor; return new C(40e9).length }`, "would allocate"},
		{"through Reflect.construct", `function f() { return Reflect.construct(Uint16Array, [40e9]).length }`, "would allocate"},
		{"sparse join", `function f() { return new Array(2.5e8).join("abcdefgh").length }`, "Array.prototype.join"},
		{"join of a long separator", `function f() { return new Array(4e6).join("abcdefgh").length }`, "join would build a string over"},
		{"join of big elements", `function f() { return new Array(2000).fill("x".repeat(1 << 23)).join("").length }`, "join would build a string over"},
		{"sparse indexOf", `function f() { const a = []; a.length = 2.5e8; return a.indexOf(1) }`, "Array.prototype.indexOf"},
		{"sparse fill", `function f() { return new Array(2.5e8).fill(0).length }`, "Array.prototype.fill"},
		{"apply with a huge array-like", `function f() { return Math.max.apply(null, {length: 2e8}) }`, "Function.prototype.apply"},
		{"Array.from a huge array-like", `function f() { return Array.from({length: 2e8}).length }`, "Array.from"},
		{"split into characters", `function f() { return "x".repeat(1 << 23).split("").length }`, "split"},
		{"typed sort", `function f() { return new Uint8Array(1 << 24).sort()[0] }`, "sort without a comparator"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			began := time.Now()
			_, err := call(t, "f", c.code, nil, DefaultLimits)
			if failureType(err) != "RangeError" || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v (%s), want a RangeError saying %q", err, failureType(err), c.want)
			}
			if took := time.Since(began); took > 5*time.Second { // refused, not run until a limit
				t.Errorf("took %s", took)
			}
		})
	}
}

func TestBuiltinCapsKeepSemantics(t *testing.T) {
	out, err := call(t, "f", `
		class Bytes extends Uint8Array { sum() { return this.reduce((a, b) => a + b, 0) } }
		function f() {
			const b = new Bytes([1, 2, 3]);
			const u = new Uint8Array(new ArrayBuffer(8), 2, 4);
			return [
				b.sum(), b instanceof Bytes, b instanceof Uint8Array, b.constructor === Bytes,
				new Float64Array(2).constructor === Float64Array, Uint8Array.name, u.length,
				Array.from(new Int16Array([5, 6]).map(x => x * 2)), new Uint8Array([3, 1, 2]).sort().join("-"),
				[1, [2, [3]]].flat(2).join(), Math.max.apply(null, [4, 9, 2]), "ab".split(""), "x".repeat(3),
				Array.prototype.join.name, typeof Uint8Array.from, Uint8Array.from([7]).slice(0)[0],
			]
		}`, nil, DefaultLimits)
	want := []any{6.0, true, true, true, true, "Uint8Array", 4.0, []any{10.0, 12.0}, "1-2-3", "1,2,3", 9.0, []any{"a", "b"}, "xxx", "join", "function", 7.0}
	if err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("got %#v, %v\nwant %#v", out, err, want)
	}
}

// BenchmarkFreshRuntime is the cost of one trivial call in this process: a fresh
// runtime with the caps, the call and its output.
func BenchmarkFreshRuntime(b *testing.B) {
	p, err := Compile("add", `function add(x) { return {sum: x.a + x.b} }`)
	if err != nil {
		b.Fatal(err)
	}
	in := map[string]any{"a": 1, "b": 2}
	for b.Loop() {
		if _, err := p.Call(context.Background(), in, DefaultLimits, nil); err != nil {
			b.Fatal(err)
		}
	}
}
