package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
)

// The extended format (SPEC "4, continued"), run in the SDK's test environment.

// flakyFailures makes the flaky activity fail that many attempts before it succeeds.
const flakyFailures = 4

func registerExtra(h *harness) {
	h.env.RegisterActivityWithOptions(func(ctx context.Context, in any) (any, error) {
		if activity.GetInfo(ctx).Attempt <= flakyFailures {
			return nil, temporal.NewApplicationError("not yet", "Flaky")
		}
		return in, nil
	}, activity.RegisterOptions{Name: "flaky"})
	h.env.RegisterActivityWithOptions(func(ctx context.Context, in any) (any, error) {
		return nil, temporal.NewNonRetryableApplicationError("card declined", "Declined", nil)
	}, activity.RegisterOptions{Name: "decline"})
}

func extHarness(t *testing.T, main string, children map[string]string) *harness {
	t.Helper()
	h := newHarness(t, main, children)
	registerExtra(h)
	return h
}

func mustRun(t *testing.T, h *harness, input any) any {
	t.Helper()
	out, err := h.run(t, input)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestCatchRoutesByTypeAfterRetries(t *testing.T) {
	code := `{"version": 1, "start": "a", "nodes": {
	  "a": {"type": "activity", "activity": "explode", "retry": {"maximum_attempts": 2, "initial_interval": "1s"},
	        "catch": [{"errors": ["Other"], "next": "other"}, {"errors": ["Boom"], "next": "boom"}, {"errors": ["*"], "next": "other"}]},
	  "other": {"type": "return", "value": "other"},
	  "boom": {"type": "return", "value": {"error": "${nodes.a.error}", "output": "${nodes.a.output}"}}}}`
	h := extHarness(t, code, nil)
	attempts := 0
	h.env.SetOnActivityStartedListener(func(*activity.Info, context.Context, converter.EncodedValues) { attempts++ })
	out := mustRun(t, h, nil)
	if attempts != 2 {
		t.Errorf("%d attempts before the catch, want 2 (retries are exhausted first)", attempts)
	}
	got := out.(map[string]any)
	e, _ := got["error"].(map[string]any)
	cause, _ := e["cause"].(map[string]any)
	if e["type"] != FailureActivity || !strings.Contains(e["message"].(string), "Boom: boom") ||
		cause["type"] != "Boom" || cause["message"] != "boom" || got["output"] != nil {
		t.Fatalf("nodes.a = %s", asJSON(got))
	}
}

func TestCatchStarAndNoMatch(t *testing.T) {
	star := `{"version": 1, "start": "a", "nodes": {
	  "a": {"type": "activity", "activity": "decline", "catch": [{"errors": ["*"], "next": "r"}]},
	  "r": {"type": "return", "value": "${nodes.a.error.cause.type}"}}}`
	if out := mustRun(t, extHarness(t, star, nil), nil); out != "Declined" {
		t.Errorf("catch *: %v", out)
	}
	// The wrapper's own type matches too.
	wrapper := strings.Replace(star, `"*"`, `"ActivityFailed"`, 1)
	if out := mustRun(t, extHarness(t, wrapper, nil), nil); out != "Declined" {
		t.Errorf("catch ActivityFailed: %v", out)
	}
	none := strings.Replace(star, `"*"`, `"Timeout"`, 1)
	_, err := extHarness(t, none, nil).run(t, nil)
	if !hasFailureType(err, FailureActivity) || !hasFailureType(err, "Declined") {
		t.Fatalf("no matching catch: %v, want the run to fail as before", err)
	}
	// The wrapper's message carries the root cause's type and message.
	if !strings.Contains(err.Error(), `node "a": activity decline failed: Declined: card declined`) {
		t.Errorf("message %q does not carry the root cause", err)
	}
}

func TestCatchOnChildParallelAndForeach(t *testing.T) {
	child := map[string]string{"charge": `{"version": 1, "start": "c", "nodes": {"c": {"type": "activity", "activity": "decline"}}}`}
	code := `{"version": 1, "start": "c", "nodes": {
	  "c": {"type": "child_workflow", "workflow": "charge", "catch": [{"errors": ["Declined"], "next": "p"}]},
	  "p": {"type": "parallel", "branches": ["ok", "bad"], "next": "never", "catch": [{"errors": ["Declined"], "next": "f"}]},
	  "ok": {"type": "wait_signal", "signal": "never"},
	  "bad": {"type": "activity", "activity": "decline"},
	  "never": {"type": "return", "value": "not caught"},
	  "f": {"type": "foreach", "items": [1, 2, 3], "as": "n", "body": "each", "catch": [{"errors": ["*"], "next": "r"}]},
	  "each": {"type": "condition", "if": "n == 2", "then": "bad2"},
	  "bad2": {"type": "activity", "activity": "decline"},
	  "r": {"type": "return", "value": ["${nodes.c.error.type}", "${nodes.p.error.type}", "${nodes.f.error.cause.type}"]}}}`
	out := mustRun(t, extHarness(t, code, child), nil)
	if asJSON(out) != `["ChildWorkflowFailed","ActivityFailed","Declined"]` {
		t.Fatalf("got %s", asJSON(out))
	}
}

func TestWhatCatchNeverSees(t *testing.T) {
	// A fail node in a branch ends the run: it is not an activity's failure.
	failing := `{"version": 1, "start": "p", "nodes": {
	  "p": {"type": "parallel", "branches": ["f"], "catch": [{"errors": ["*"], "next": "r"}]},
	  "f": {"type": "fail", "message": "stop"},
	  "r": {"type": "return", "value": "caught"}}}`
	if _, err := extHarness(t, failing, nil).run(t, nil); !hasFailureType(err, FailureWorkflow) {
		t.Errorf("fail in a branch: %v", err)
	}
	// Cancellation of the run is not caught.
	waiting := `{"version": 1, "start": "a", "nodes": {
	  "a": {"type": "child_workflow", "workflow": "forever", "catch": [{"errors": ["*"], "next": "r"}]},
	  "r": {"type": "return", "value": "caught"}}}`
	h := extHarness(t, waiting, map[string]string{"forever": `{"version": 1, "start": "w", "nodes": {"w": {"type": "wait_signal", "signal": "never"}}}`})
	h.env.RegisterDelayedCallback(h.env.CancelWorkflow, time.Minute)
	_, err := h.run(t, nil)
	if !temporal.IsCanceledError(err) {
		t.Errorf("cancelled run: %v, want a cancellation", err)
	}
}

func TestForeachResultsInItemOrderWithConcurrency(t *testing.T) {
	// Each iteration sleeps longer for earlier items: they finish in reverse order.
	code := `{"version": 1, "start": "f", "nodes": {
	  "f": {"type": "foreach", "items": "${input.items}", "as": "item", "concurrency": 3, "body": "nap", "next": "r"},
	  "nap": {"type": "sleep", "duration": "${(10 - item) * 60}", "next": "e"},
	  "e": {"type": "activity", "activity": "echo", "input": {"item": "${item}", "index": "${index}", "slept": "${nodes.nap.output}"}, "next": "out"},
	  "out": {"type": "set", "values": "${nodes.e.output.item * 10 + index}"},
	  "r": {"type": "return", "value": "${nodes.f.output}"}}}`
	h := extHarness(t, code, nil)
	running, most := 0, 0
	h.env.SetOnTimerScheduledListener(func(string, time.Duration) {
		running++
		most = max(most, running)
	})
	h.env.SetOnTimerFiredListener(func(string) { running-- })
	out := mustRun(t, h, map[string]any{"items": []int{1, 2, 3, 4, 5, 6, 7}})
	if asJSON(out) != `[10,21,32,43,54,65,76]` {
		t.Fatalf("got %s", asJSON(out))
	}
	if most != 3 {
		t.Errorf("at most %d iterations ran at once, want 3", most)
	}
}

func TestForeachScopes(t *testing.T) {
	code := `{"version": 1, "start": "before", "nodes": {
	  "before": {"type": "set", "values": "outer", "next": "rows"},
	  "rows": {"type": "foreach", "items": [[1, 2], [3]], "as": "row", "index": "i", "body": "cols", "next": "r"},
	  "cols": {"type": "foreach", "items": "${row}", "as": "cell", "index": "j", "body": "cell_value"},
	  "cell_value": {"type": "set", "values": "${nodes.before.output}:${i}.${j}=${cell}", "next": "seen"},
	  "seen": {"type": "set", "values": "${nodes.cell_value.output}"},
	  "r": {"type": "return", "value": {"out": "${nodes.rows.output}", "empty": "${nodes.empty.output}"}, "next": null}}}`
	code = strings.Replace(code, `"r": {"type": "return", "value": {"out": "${nodes.rows.output}", "empty": "${nodes.empty.output}"}, "next": null}`,
		`"r": {"type": "foreach", "items": [], "as": "x", "body": "cell_x", "next": "done"},
	  "cell_x": {"type": "set", "values": 1},
	  "done": {"type": "return", "value": {"out": "${nodes.rows.output}", "empty": "${nodes.r.output}"}}`, 1)
	out := mustRun(t, extHarness(t, code, nil), nil)
	if asJSON(out) != `{"empty":[],"out":[["outer:0.0=1","outer:0.1=2"],["outer:1.0=3"]]}` {
		t.Fatalf("got %s", asJSON(out))
	}
}

func TestForeachItemsMustBeAnArray(t *testing.T) {
	code := `{"version": 1, "start": "f", "nodes": {
	  "f": {"type": "foreach", "items": "${input}", "as": "x", "body": "b"},
	  "b": {"type": "set", "values": 1}}}`
	_, err := extHarness(t, code, nil).run(t, map[string]any{"not": "a list"})
	if !hasFailureType(err, FailureExpression) || !strings.Contains(err.Error(), "not an array") {
		t.Fatalf("got %v", err)
	}
}

func TestSwitch(t *testing.T) {
	code := `{"version": 1, "start": "s", "nodes": {
	  "s": {"type": "switch", "cases": [{"if": "input.n > 100", "next": "big"}, {"if": "${input.n > 10}", "next": "mid"}, {"if": "input.n > 5", "next": "mid"}], "default": "small"},
	  "big": {"type": "return", "value": "big ${nodes.s.output}"},
	  "mid": {"type": "return", "value": "mid ${nodes.s.output}"},
	  "small": {"type": "return", "value": "small ${nodes.s.output}"}}}`
	for n, want := range map[int]string{500: "big 0", 50: "mid 1", 7: "mid 2", 1: "small null"} {
		if out := mustRun(t, extHarness(t, code, nil), map[string]any{"n": n}); out != want {
			t.Errorf("n=%d: %v, want %s", n, out, want)
		}
	}
	// Without a default, nothing matching ends the path with null.
	out, err := extHarness(t, `{"version": 1, "start": "s", "nodes": {"s": {"type": "switch", "cases": [{"if": "false", "next": "s"}]}}}`, nil).run(t, nil)
	if err != nil || out != nil {
		t.Errorf("no match, no default: %v, %v", out, err)
	}
	_, err = extHarness(t, `{"version": 1, "start": "s", "nodes": {"s": {"type": "switch", "cases": [{"if": "1", "next": "s"}]}}}`, nil).run(t, nil)
	if !hasFailureType(err, FailureExpression) || !strings.Contains(err.Error(), "cases[0].if") {
		t.Errorf("non-boolean case: %v", err)
	}
}

func TestWorkflowTimeout(t *testing.T) {
	code := `{"version": 1, "start": "w", "timeout": "1h", "nodes": {
	  "w": {"type": "wait_signal", "signal": "go", "next": "r"},
	  "r": {"type": "return", "value": "in time"}}}`
	h := extHarness(t, code, nil)
	began := h.env.Now()
	_, err := h.run(t, nil)
	if !hasFailureType(err, FailureTimeout) {
		t.Fatalf("got %v, want %s", err, FailureTimeout)
	}
	if took := h.env.Now().Sub(began); took < time.Hour || took > time.Hour+time.Minute {
		t.Errorf("failed after %s, want 1h", took)
	}
	h = extHarness(t, code, nil)
	h.env.RegisterDelayedCallback(func() { h.env.SignalWorkflow("go", nil) }, 10*time.Minute)
	if out := mustRun(t, h, nil); out != "in time" {
		t.Errorf("got %v", out)
	}
}

func TestWaitSignalAnyTakesTheFirst(t *testing.T) {
	code := `{"version": 1, "start": "w", "nodes": {
	  "w": {"type": "wait_signal", "any": [{"signal": "approve", "next": "yes"}, {"signal": "reject", "next": "no"}], "timeout": "1h", "on_timeout": "late"},
	  "yes": {"type": "return", "value": "approved by ${nodes.w.output}; signals ${signals}"},
	  "no": {"type": "return", "value": "rejected by ${nodes.w.output}; signals ${signals}"},
	  "late": {"type": "return", "value": "late"}}}`
	h := extHarness(t, code, nil)
	h.env.RegisterDelayedCallback(func() {
		h.env.SignalWorkflow("reject", "Bob")
		h.env.SignalWorkflow("approve", "Ann")
	}, time.Minute)
	if out := mustRun(t, h, nil); out != `rejected by Bob; signals {"reject":"Bob"}` {
		t.Errorf("got %v", out)
	}
	if out := mustRun(t, extHarness(t, code, nil), nil); out != "late" {
		t.Errorf("no signal: %v", out)
	}
}

func TestSignalsAreTheLastConsumed(t *testing.T) {
	code := `{"version": 1, "start": "s", "nodes": {
	  "s": {"type": "sleep", "duration": "1h", "next": "w"},
	  "w": {"type": "wait_signal", "signal": "step", "next": "r"},
	  "r": {"type": "return", "value": {"consumed": "${signals.step}", "flag": "${signals.flag}"}}}}`
	h := extHarness(t, strings.Replace(code, `"${signals.flag}"`, `"${signals.flag}"`, 1), nil)
	h.env.RegisterDelayedCallback(func() {
		h.env.SignalWorkflow("step", 1)
		h.env.SignalWorkflow("step", 2)
		h.env.SignalWorkflow("flag", "raised") // no node waits for it: consumed on arrival
	}, time.Minute)
	if out := mustRun(t, h, nil); asJSON(out) != `{"consumed":1,"flag":"raised"}` {
		t.Errorf("got %s", asJSON(out))
	}
}

func TestSleepUntil(t *testing.T) {
	code := `{"version": 1, "start": "s", "nodes": {
	  "s": {"type": "sleep", "until": "${input.at}", "next": "r"},
	  "r": {"type": "return", "value": "woke"}}}`
	h := extHarness(t, code, nil)
	began := h.env.Now()
	at := began.Add(3 * time.Hour).UTC().Format(time.RFC3339)
	if out := mustRun(t, h, map[string]any{"at": at}); out != "woke" {
		t.Fatal(out)
	}
	if slept := h.env.Now().Sub(began); slept < 3*time.Hour-time.Second || slept > 3*time.Hour+time.Minute {
		t.Errorf("slept %s, want 3h", slept)
	}
	h = extHarness(t, code, nil)
	began = h.env.Now()
	mustRun(t, h, map[string]any{"at": "2001-01-01T00:00:00Z"})
	if slept := h.env.Now().Sub(began); slept > time.Minute {
		t.Errorf("a time past slept %s", slept)
	}
	if _, err := extHarness(t, code, nil).run(t, map[string]any{"at": "tomorrow"}); !hasFailureType(err, FailureExpression) {
		t.Errorf("not a time: %v", err)
	}
}

func TestWorkflowInfoInExpressions(t *testing.T) {
	code := `{"version": 1, "start": "r", "nodes": {
	  "r": {"type": "return", "value": {"id": "${workflow.id}", "run": "${workflow.run_id != ''}", "type": "${workflow.type}", "attempt": "${workflow.attempt}", "start": "${date(workflow.start_time).Year() > 2000}"}}}}`
	out := mustRun(t, extHarness(t, code, nil), nil).(map[string]any)
	if out["type"] != "main" || out["attempt"] != float64(1) || out["run"] != true || out["start"] != true || out["id"] == "" {
		t.Fatalf("got %s", asJSON(out))
	}
	if _, err := Parse([]byte(`{"version": 1, "start": "r", "nodes": {"r": {"type": "return", "value": "${workflow.name}"}}}`), Catalog{}); err == nil ||
		!strings.Contains(err.Error(), `workflow has no field "name"`) {
		t.Errorf("workflow.name: %v", err)
	}
}

func TestDefaultRetry(t *testing.T) {
	attempts := func(code string) (int, error) {
		h := extHarness(t, code, nil)
		n := 0
		h.env.SetOnActivityStartedListener(func(*activity.Info, context.Context, converter.EncodedValues) { n++ })
		_, err := h.run(t, nil)
		return n, err
	}
	n, err := attempts(`{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "flaky", "input": 1}}}`)
	if n != DefaultMaximumAttempts || !hasFailureType(err, "Flaky") {
		t.Errorf("without retry: %d attempts, %v; want %d and a failure", n, err, DefaultMaximumAttempts)
	}
	n, err = attempts(`{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "flaky", "input": 1, "retry": {"maximum_attempts": 0, "initial_interval": "1s"}}}}`)
	if n != flakyFailures+1 || err != nil {
		t.Errorf("maximum_attempts 0: %d attempts, %v; want it to retry until it succeeds", n, err)
	}
}

func TestPayloadTooLargeBeforeTheCommand(t *testing.T) {
	code := `{"version": 1, "start": "a", "nodes": {
	  "a": {"type": "activity", "activity": "echo", "input": "${repeat('xxxxxxxxxx', 205000)}"}}}`
	h := extHarness(t, code, nil)
	started := false
	h.env.SetOnActivityStartedListener(func(*activity.Info, context.Context, converter.EncodedValues) { started = true })
	_, err := h.run(t, nil)
	if !hasFailureType(err, FailurePayload) || started {
		t.Fatalf("got %v (activity started: %v), want %s before the activity", err, started, FailurePayload)
	}
	// A result too large fails the run the same way.
	_, err = extHarness(t, `{"version": 1, "start": "r", "nodes": {"r": {"type": "return", "value": "${repeat('xxxxxxxxxx', 205000)}"}}}`, nil).run(t, nil)
	if !hasFailureType(err, FailurePayload) || !strings.Contains(err.Error(), "result") {
		t.Fatalf("large result: %v", err)
	}
}

func TestStepLimitIsPerPath(t *testing.T) {
	// 60 iterations of 1 node each: more nodes than the harness's limit of 50 in the
	// run, but each path stays far below it.
	code := `{"version": 1, "start": "f", "nodes": {
	  "f": {"type": "foreach", "items": "${1..60}", "as": "x", "body": "b"},
	  "b": {"type": "set", "values": "${x}"}}}`
	out := mustRun(t, extHarness(t, code, nil), nil)
	if len(out.([]any)) != 60 {
		t.Fatalf("got %v", out)
	}
	_, err := extHarness(t, `{"version": 1, "start": "f", "nodes": {
	  "f": {"type": "foreach", "items": [1], "as": "x", "body": "b"},
	  "b": {"type": "set", "values": "${x}", "next": "b"}}}`, nil).run(t, nil)
	if !hasFailureType(err, ErrStepLimit) {
		t.Fatalf("a loop inside an iteration: %v", err)
	}
}

// chain runs a definition as Temporal would run a chain of continue-as-new: each run
// in a fresh test environment given the arguments the one before continued with.
// suggest says whether Temporal suggests continuing as new in the nth run (from 0).
type chained struct {
	runs   int
	last   *Continued
	result any
	err    error
}

func chain(t *testing.T, code string, input any, suggest func(run int) bool, signals map[int][]Signal) chained {
	t.Helper()
	def, err := Parse([]byte(code), Catalog{})
	if err != nil {
		t.Fatal(err)
	}
	var c *Continued
	for run := 0; run < 200; run++ {
		var s testsuite.WorkflowTestSuite
		env := s.NewTestWorkflowEnvironment()
		env.RegisterWorkflowWithOptions(func(ctx workflow.Context, input any, c *Continued) (any, error) {
			return Execute(ctx, def, input, Options{MaxSteps: 50, Pin: "pin-1", Continued: c})
		}, workflow.RegisterOptions{Name: "main"})
		env.RegisterActivityWithOptions(func(_ context.Context, in any) (any, error) { return in, nil }, activity.RegisterOptions{Name: "echo"})
		env.SetContinueAsNewSuggested(suggest(run))
		for _, sig := range signals[run] {
			env.RegisterDelayedCallback(func() { env.SignalWorkflow(sig.Name, sig.Payload) }, time.Second)
		}
		env.ExecuteWorkflow("main", input, c)
		err := env.GetWorkflowError()
		var can *workflow.ContinueAsNewError
		if !errors.As(err, &can) {
			out := chained{runs: run + 1, last: c, err: err}
			if err == nil {
				if gerr := env.GetWorkflowResult(&out.result); gerr != nil {
					t.Fatal(gerr)
				}
			}
			return out
		}
		if can.WorkflowType.Name != "main" {
			t.Fatalf("continued as %q", can.WorkflowType.Name)
		}
		var next Continued
		if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &input, &next); err != nil {
			t.Fatal(err)
		}
		if next.Pin != "pin-1" {
			t.Fatalf("run %d continued with pin %q", run, next.Pin)
		}
		c = &next
	}
	t.Fatal("the chain did not end")
	return chained{}
}

func TestContinueAsNewNode(t *testing.T) {
	code := `{"version": 1, "start": "s", "nodes": {
	  "s": {"type": "sleep", "duration": "1m", "next": "w"},
	  "w": {"type": "wait_signal", "signal": "tick", "next": "c"},
	  "c": {"type": "condition", "if": "input.n >= 3", "then": "r", "else": "again"},
	  "again": {"type": "continue_as_new", "input": {"n": "${input.n + 1}", "got": "${nodes.w.output}"}},
	  "r": {"type": "return", "value": {"n": "${input.n}", "got": "${input.got}", "tick": "${nodes.w.output}"}}}}`
	never := func(int) bool { return false }
	// Two ticks reach the first run: one is consumed, the other is carried over.
	sig := map[int][]Signal{0: {{Name: "tick", Payload: "a"}, {Name: "tick", Payload: "b"}}, 2: {{Name: "tick", Payload: "c"}}}
	out := chain(t, code, map[string]any{"n": 1}, never, sig)
	if out.err != nil || asJSON(out.result) != `{"got":"b","n":3,"tick":"c"}` || out.runs != 3 {
		t.Fatalf("%d runs: %s, %v", out.runs, asJSON(out.result), out.err)
	}
	if out.last.Resume != nil {
		t.Error("an explicit continue_as_new carried the run's state")
	}
}

func TestAutomaticContinueAsNewAtALoopBack(t *testing.T) {
	// A counter loop on the main path; Temporal suggests continuing in every run.
	code := `{"version": 1, "start": "init", "timeout": "24h", "nodes": {
	  "init": {"type": "set", "values": 0, "next": "inc"},
	  "inc": {"type": "activity", "activity": "echo", "input": "${(nodes.inc?.output ?? 0) + 1}", "next": "more"},
	  "more": {"type": "condition", "if": "nodes.inc.output < 5", "then": "inc", "else": "r"},
	  "r": {"type": "return", "value": {"count": "${nodes.inc.output}", "init": "${nodes.init.output}", "start": "${workflow.start_time}"}}}}`
	out := chain(t, code, map[string]any{}, func(int) bool { return true }, nil)
	if out.err != nil {
		t.Fatal(out.err)
	}
	got := out.result.(map[string]any)
	if got["count"] != float64(5) || got["init"] != float64(0) || out.runs != 5 {
		t.Fatalf("%d runs: %s", out.runs, asJSON(got))
	}
	res := out.last.Resume
	if res == nil || res.At != "inc" || res.Deadline == "" || res.StartTime != got["start"] {
		t.Fatalf("carried %+v", res)
	}
}

func TestAutomaticContinueAsNewBetweenIterations(t *testing.T) {
	code := `{"version": 1, "start": "f", "nodes": {
	  "f": {"type": "foreach", "items": "${1..7}", "as": "x", "concurrency": 2, "body": "e", "next": "r"},
	  "e": {"type": "activity", "activity": "echo", "input": "${x * index}"},
	  "r": {"type": "return", "value": "${nodes.f.output}"}}}`
	out := chain(t, code, nil, func(run int) bool { return run < 3 }, nil)
	if out.err != nil || asJSON(out.result) != `[0,2,6,12,20,30,42]` {
		t.Fatalf("%d runs: %s, %v", out.runs, asJSON(out.result), out.err)
	}
	if out.runs != 4 || out.last.Resume == nil || out.last.Resume.Foreach == nil || len(out.last.Resume.Foreach.Results) != 3 {
		t.Fatalf("%d runs, the last resumed with %+v", out.runs, out.last.Resume)
	}
}

func TestContinuedStateTooLarge(t *testing.T) {
	code := `{"version": 1, "start": "big", "nodes": {
	  "big": {"type": "set", "values": "${repeat('xxxxxxxxxx', 150000)}", "next": "f"},
	  "f": {"type": "foreach", "items": "${[nodes.big.output, 1]}", "as": "x", "body": "e"},
	  "e": {"type": "activity", "activity": "echo", "input": "${len(x)}"}}}`
	out := chain(t, code, nil, func(int) bool { return true }, nil)
	if !hasFailureType(out.err, FailurePayload) || !strings.Contains(out.err.Error(), "carried to the continued run") {
		t.Fatalf("got %v", out.err)
	}
}

func TestParseExtendedFormat(t *testing.T) {
	code := `{"version": 1, "start": "a", "timeout": "1h", "nodes": {
	  "a": {"type": "activity", "activity": "echo", "next": "f", "catch": [{"errors": ["Boom", "*"], "next": "s"}]},
	  "f": {"type": "foreach", "items": "${input.rows}", "as": "row", "index": "i", "concurrency": 5, "body": "b", "next": "sw", "catch": [{"errors": ["*"], "next": "s"}]},
	  "b": {"type": "set", "values": {"row": "${row}", "at": "${i}"}},
	  "sw": {"type": "switch", "cases": [{"if": "len(nodes.f.output) > 1", "next": "w"}], "default": "s"},
	  "w": {"type": "wait_signal", "any": [{"signal": "go", "next": "z"}, {"signal": "stop", "next": "s"}], "timeout": "1m", "on_timeout": "s"},
	  "z": {"type": "sleep", "until": "2030-01-01T00:00:00Z", "next": "c"},
	  "c": {"type": "continue_as_new", "input": "${input}"},
	  "s": {"type": "set", "values": "${signals.go}", "next": null}}}`
	def, err := Parse([]byte(code), testCatalog)
	if err != nil {
		t.Fatal(err)
	}
	if def.Timeout != time.Hour || def.Nodes["f"].Concurrency != 5 || def.Nodes["f"].Index != "i" || !def.Nodes["c"].Main || def.Nodes["b"].Main {
		t.Fatalf("parsed %+v %+v", def, def.Nodes["f"])
	}
	if fmt.Sprint(def.Signals) != "[go stop]" || !def.Waits["go"] {
		t.Errorf("signals %v, waits %v", def.Signals, def.Waits)
	}
}

func TestParseReportsProblemsByNode(t *testing.T) {
	cases := []struct {
		name, code, node, field, want string
	}{
		{"branches share a node", `{"version": 1, "start": "p", "nodes": {
			"p": {"type": "parallel", "branches": ["a", "b"]},
			"a": {"type": "set", "values": 1, "next": "c"}, "b": {"type": "set", "values": 2, "next": "c"}, "c": {"type": "set", "values": 3}}}`,
			"c", "", `reached from branch "a" of parallel "p" and from branch "b" of parallel "p"`},
		{"body leaves the foreach", `{"version": 1, "start": "f", "nodes": {
			"f": {"type": "foreach", "items": [], "as": "x", "body": "b", "next": "after"},
			"b": {"type": "set", "values": 1, "next": "after"}, "after": {"type": "set", "values": 2}}}`,
			"after", "", `reached from the main path and from the body of foreach "f"`},
		{"continue_as_new in a body", `{"version": 1, "start": "f", "nodes": {
			"f": {"type": "foreach", "items": [], "as": "x", "body": "c"}, "c": {"type": "continue_as_new", "input": 1}}}`,
			"c", "", "main path only"},
		{"loop variable outside its body", `{"version": 1, "start": "f", "nodes": {
			"f": {"type": "foreach", "items": [], "as": "x", "body": "b", "next": "r"}, "b": {"type": "set", "values": "${x}"},
			"r": {"type": "return", "value": "${x}"}}}`,
			"r", "value", "unknown name x"},
		{"shadowed loop variable", `{"version": 1, "start": "f", "nodes": {
			"f": {"type": "foreach", "items": [], "as": "x", "body": "g"}, "g": {"type": "foreach", "items": [], "as": "x", "index": "j", "body": "b"},
			"b": {"type": "set", "values": 1}}}`,
			"g", "", `"x" is already a variable of an enclosing foreach`},
		{"let hides a loop variable", `{"version": 1, "start": "f", "nodes": {
			"f": {"type": "foreach", "items": [], "as": "x", "body": "b"}, "b": {"type": "set", "values": "${let x = 1; x}"}}}`,
			"b", "values", "is a foreach variable here"},
		{"reserved variable", `{"version": 1, "start": "f", "nodes": {"f": {"type": "foreach", "items": [], "as": "input", "body": "f"}}}`,
			"f", "as", `cannot be "input"`},
		{"bad variable", `{"version": 1, "start": "f", "nodes": {"f": {"type": "foreach", "items": [], "as": "a-b", "body": "f"}}}`,
			"f", "as", "must be a name"},
		{"concurrency", `{"version": 1, "start": "f", "nodes": {"f": {"type": "foreach", "items": [], "as": "x", "body": "b", "concurrency": 0}, "b": {"type": "set", "values": 1}}}`,
			"f", "concurrency", "from 1 to 100"},
		{"catch without next", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "echo", "catch": [{"errors": ["*"]}]}}}`,
			"a", "catch[0].next", `"catch[0].next" is missing`},
		{"catch to nowhere", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "echo", "catch": [{"errors": ["*"], "next": "z"}]}}}`,
			"a", "catch[0].next", `names node "z", which does not exist`},
		{"catch on a set", `{"version": 1, "start": "a", "nodes": {"a": {"type": "set", "values": 1, "catch": []}}}`,
			"a", "catch", `unknown field "catch"`},
		{"case not boolean syntax", `{"version": 1, "start": "s", "nodes": {"s": {"type": "switch", "cases": [{"if": "1 +", "next": "s"}]}}}`,
			"s", "cases[0].if", "bad expression"},
		{"signal and any", `{"version": 1, "start": "w", "nodes": {"w": {"type": "wait_signal", "signal": "a", "any": [{"signal": "b", "next": "w"}]}}}`,
			"w", "any", "not both"},
		{"duration and until", `{"version": 1, "start": "s", "nodes": {"s": {"type": "sleep", "duration": "1s", "until": "2030-01-01T00:00:00Z"}}}`,
			"s", "until", "not both"},
		{"bad timeout", `{"version": 1, "start": "s", "timeout": "0s", "nodes": {"s": {"type": "set", "values": 1}}}`,
			"", "timeout", "positive duration"},
		{"set without values", `{"version": 1, "start": "s", "nodes": {"s": {"type": "set"}}}`,
			"s", "values", `"values" is missing`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.code), testCatalog)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v", err)
			}
			for _, p := range ve.Problems {
				if p.Node == c.node && p.Field == c.field && strings.Contains(p.Message, c.want) {
					return
				}
			}
			t.Fatalf("no problem {%q %q ...%s...} in %#v", c.node, c.field, c.want, ve.Problems)
		})
	}
}

func TestJoinsAndPinnedDefinitions(t *testing.T) {
	// Several nodes of one path reaching the same node is a join: valid.
	join := `{"version": 1, "start": "c", "nodes": {
	  "c": {"type": "condition", "if": "true", "then": "a", "else": "b"},
	  "a": {"type": "set", "values": 1, "next": "done"}, "b": {"type": "set", "values": 2, "next": "done"},
	  "done": {"type": "return", "value": "${nodes.a.output}"}}}`
	if _, err := Parse([]byte(join), Catalog{}); err != nil {
		t.Fatal(err)
	}
	// Parallel branches that share a node are refused, but a run pinned to such a
	// definition (valid before foreach came) still loads it.
	shared := `{"version": 1, "start": "p", "nodes": {
	  "p": {"type": "parallel", "branches": ["a", "b"]},
	  "a": {"type": "activity", "activity": "echo", "next": "c"}, "b": {"type": "activity", "activity": "echo", "next": "c"},
	  "c": {"type": "activity", "activity": "log"}}}`
	if _, err := Parse([]byte(shared), Catalog{}); err == nil {
		t.Fatal("branches sharing a node were accepted")
	}
	if _, err := ParsePinned([]byte(shared)); err != nil {
		t.Fatalf("pinned: %v", err)
	}
}

// A foreach of many items whose iterations never wait is bounded like a loop of nodes
// that never waits: the interpreter's own work counts against the workflow task's
// budget. (A budget of 100,000 steps here; 10,000,000 in production, about 0.25 s.)
func TestForeachThatNeverWaitsIsBounded(t *testing.T) {
	code := `{"version": 1, "start": "f", "nodes": {
	  "f": {"type": "foreach", "items": "${1..5000}", "as": "x", "concurrency": %d, "body": "b"},
	  "b": {"type": "set", "values": 1}}}`
	for _, c := range []int{1, 10} {
		def, err := Parse([]byte(fmt.Sprintf(code, c)), Catalog{})
		if err != nil {
			t.Fatal(err)
		}
		var s testsuite.WorkflowTestSuite
		env := s.NewTestWorkflowEnvironment()
		env.RegisterWorkflowWithOptions(func(ctx workflow.Context, input any) (any, error) {
			return Execute(ctx, def, input, Options{MaxSteps: 10, TaskSteps: 100_000})
		}, workflow.RegisterOptions{Name: "spin"})
		env.ExecuteWorkflow("spin", nil)
		err = env.GetWorkflowError()
		if !hasFailureType(err, FailureExpression) || !strings.Contains(err.Error(), "without waiting") {
			t.Fatalf("concurrency %d: %v; want an ExpressionError about work without waiting", c, err)
		}
	}
}
