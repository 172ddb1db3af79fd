package flow

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
)

// harness runs definitions in the SDK's in-memory test environment (time skips), with
// echo and a failing activity registered the way the reconciler registers them.
type harness struct {
	testsuite.WorkflowTestSuite
	env *testsuite.TestWorkflowEnvironment
}

func newHarness(t *testing.T, main string, children map[string]string) *harness {
	t.Helper()
	h := &harness{}
	h.env = h.NewTestWorkflowEnvironment()
	register := func(name, code string) {
		def, err := Parse([]byte(code), Catalog{})
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		h.env.RegisterWorkflowWithOptions(func(ctx workflow.Context, input any) (any, error) {
			return Execute(ctx, def, input, Options{MaxSteps: 50})
		}, workflow.RegisterOptions{Name: name})
	}
	register("main", main)
	for name, code := range children {
		register(name, code)
	}
	h.env.RegisterActivityWithOptions(func(_ context.Context, in any) (any, error) { return in, nil }, activity.RegisterOptions{Name: "echo"})
	h.env.RegisterActivityWithOptions(func(ctx context.Context, in any) (any, error) {
		return nil, temporal.NewApplicationError("boom", "Boom")
	}, activity.RegisterOptions{Name: "explode"})
	return h
}

func (h *harness) run(t *testing.T, input any) (any, error) {
	t.Helper()
	h.env.ExecuteWorkflow("main", input)
	if !h.env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	if err := h.env.GetWorkflowError(); err != nil {
		return nil, err
	}
	var out any
	if err := h.env.GetWorkflowResult(&out); err != nil && !errors.Is(err, temporal.ErrNoData) {
		t.Fatal(err)
	}
	return out, nil
}

func TestActivityAndReturn(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "greet", "nodes": {
	  "greet": {"type": "activity", "activity": "echo", "input": {"message": "Hello, ${input.name}!"}, "next": "done"},
	  "done":  {"type": "return", "value": "${nodes.greet.output.message}"}}}`, nil)
	out, err := h.run(t, map[string]any{"name": "Ada"})
	if err != nil || out != "Hello, Ada!" {
		t.Fatalf("got %v, %v", out, err)
	}
}

func TestLastNodeOutputIsTheResult(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "a", "nodes": {
	  "a": {"type": "activity", "activity": "echo", "input": "${input.n + 1}"}}}`, nil)
	out, err := h.run(t, map[string]any{"n": 1})
	if err != nil || out != float64(2) {
		t.Fatalf("got %v, %v", out, err)
	}
}

func TestConditionTakesTheRightBranch(t *testing.T) {
	code := `{"version": 1, "start": "check", "nodes": {
	  "check": {"type": "condition", "if": "input.amount > 100", "then": "big", "else": "small"},
	  "big":   {"type": "return", "value": "big"},
	  "small": {"type": "return", "value": "small"}}}`
	for amount, want := range map[float64]string{500: "big", 5: "small"} {
		out, err := newHarness(t, code, nil).run(t, map[string]any{"amount": amount})
		if err != nil || out != want {
			t.Errorf("amount %v: got %v, %v; want %s", amount, out, err, want)
		}
	}
	// A missing branch ends the run with the condition's value.
	out, err := newHarness(t, `{"version": 1, "start": "c", "nodes": {"c": {"type": "condition", "if": "false", "then": "x"}, "x": {"type": "return", "value": 1}}}`, nil).run(t, nil)
	if err != nil || out != false {
		t.Errorf("missing else: got %v, %v", out, err)
	}
}

func TestConditionMustBeBoolean(t *testing.T) {
	_, err := newHarness(t, `{"version": 1, "start": "c", "nodes": {"c": {"type": "condition", "if": "input.n", "then": "c"}}}`, nil).run(t, map[string]any{"n": 3})
	if err == nil || !strings.Contains(err.Error(), "not a boolean") {
		t.Fatalf("got %v", err)
	}
}

func TestSleepIsADurableTimer(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "s", "nodes": {
	  "s": {"type": "sleep", "duration": "${input.wait}", "next": "r"},
	  "r": {"type": "return", "value": "woke"}}}`, nil)
	began := h.env.Now()
	out, err := h.run(t, map[string]any{"wait": "2h"})
	if err != nil || out != "woke" {
		t.Fatalf("got %v, %v", out, err)
	}
	if slept := h.env.Now().Sub(began); slept < 2*time.Hour {
		t.Fatalf("workflow time advanced %s, want 2h", slept)
	}
}

func TestParallelReturnsEveryBranchInOrder(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "p", "nodes": {
	  "p":  {"type": "parallel", "branches": ["a1", "b1"], "next": "r"},
	  "a1": {"type": "sleep", "duration": "1h", "next": "a2"},
	  "a2": {"type": "activity", "activity": "echo", "input": "slow"},
	  "b1": {"type": "activity", "activity": "echo", "input": "fast"},
	  "r":  {"type": "return", "value": "${nodes.p.output}"}}}`, nil)
	out, err := h.run(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := out.([]any)
	if len(got) != 2 || got[0] != "slow" || got[1] != "fast" {
		t.Fatalf("got %#v, want [slow fast]", out)
	}
}

func TestParallelBranchFailureCancelsTheOthers(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "p", "nodes": {
	  "p": {"type": "parallel", "branches": ["wait", "bad"]},
	  "wait": {"type": "wait_signal", "signal": "never"},
	  "bad": {"type": "activity", "activity": "explode", "retry": {"maximum_attempts": 1}}}}`, nil)
	_, err := h.run(t, nil)
	if !hasFailureType(err, "Boom") || !strings.Contains(err.Error(), `node "bad"`) {
		t.Fatalf("got %v, want the branch's Boom failure", err)
	}
}

// hasFailureType looks for an application failure of that type anywhere in err's chain.
func hasFailureType(err error, typ string) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		var app *temporal.ApplicationError
		if errors.As(err, &app) && app.Type() == typ {
			return true
		}
		if app != nil {
			err = app
		}
	}
	return false
}

func TestWaitSignalDeliversThePayload(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "w", "nodes": {
	  "w": {"type": "wait_signal", "signal": "approve", "timeout": "1h", "next": "r", "on_timeout": "late"},
	  "r": {"type": "return", "value": "${nodes.w.output.by} via ${signals.approve.by}"},
	  "late": {"type": "return", "value": "timed out"}}}`, nil)
	h.env.RegisterDelayedCallback(func() { h.env.SignalWorkflow("approve", map[string]any{"by": "Grace"}) }, 10*time.Minute)
	out, err := h.run(t, nil)
	if err != nil || out != "Grace via Grace" {
		t.Fatalf("got %v, %v", out, err)
	}
}

func TestWaitSignalTimesOut(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "w", "nodes": {
	  "w": {"type": "wait_signal", "signal": "approve", "timeout": "1h", "next": "r", "on_timeout": "late"},
	  "r": {"type": "return", "value": "approved"},
	  "late": {"type": "return", "value": "${nodes.w.output == nil ? 'timed out' : 'odd'}"}}}`, nil)
	out, err := h.run(t, nil)
	if err != nil || out != "timed out" {
		t.Fatalf("got %v, %v", out, err)
	}
}

func TestWaitSignalTakesASignalSentEarlier(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "s", "nodes": {
	  "s": {"type": "sleep", "duration": "1h", "next": "w"},
	  "w": {"type": "wait_signal", "signal": "go", "next": "r"},
	  "r": {"type": "return", "value": "${nodes.w.output}"}}}`, nil)
	h.env.RegisterDelayedCallback(func() { h.env.SignalWorkflow("go", "early") }, time.Minute)
	out, err := h.run(t, nil)
	if err != nil || out != "early" {
		t.Fatalf("got %v, %v", out, err)
	}
}

func TestChildWorkflow(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "c", "nodes": {
	  "c": {"type": "child_workflow", "workflow": "double", "input": {"n": "${input.n}"}, "next": "r"},
	  "r": {"type": "return", "value": "${nodes.c.output + 1}"}}}`,
		map[string]string{"double": `{"version": 1, "start": "d", "nodes": {"d": {"type": "return", "value": "${input.n * 2}"}}}`})
	out, err := h.run(t, map[string]any{"n": 5})
	if err != nil || out != float64(11) {
		t.Fatalf("got %v, %v", out, err)
	}
}

func TestFailEndsTheRunWithoutRetry(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "f", "nodes": {"f": {"type": "fail", "message": "order ${input.id} rejected"}}}`, nil)
	_, err := h.run(t, map[string]any{"id": 7})
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != FailureWorkflow || !app.NonRetryable() || !strings.Contains(app.Error(), "order 7 rejected") {
		t.Fatalf("got %v", err)
	}
}

func TestActivityFailureFollowsTheRetryPolicy(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "a", "nodes": {
	  "a": {"type": "activity", "activity": "explode", "retry": {"maximum_attempts": 3, "initial_interval": "1s"}}}}`, nil)
	attempts := 0
	h.env.SetOnActivityStartedListener(func(*activity.Info, context.Context, converter.EncodedValues) { attempts++ })
	_, err := h.run(t, nil)
	if err == nil || attempts != 3 {
		t.Fatalf("err %v after %d attempts, want a failure after 3", err, attempts)
	}
}

func TestLoopsStopAtTheStepLimit(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "a", "nodes": {
	  "a": {"type": "activity", "activity": "echo", "input": 1, "next": "b"},
	  "b": {"type": "condition", "if": "true", "then": "a"}}}`, nil)
	_, err := h.run(t, nil)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != ErrStepLimit {
		t.Fatalf("got %v, want %s", err, ErrStepLimit)
	}
}

func TestStateQuery(t *testing.T) {
	h := newHarness(t, `{"version": 1, "start": "a", "nodes": {
	  "a": {"type": "activity", "activity": "echo", "input": "one", "next": "w"},
	  "w": {"type": "wait_signal", "signal": "go", "next": "r"},
	  "r": {"type": "return", "value": "done"}}}`, nil)
	var state State
	h.env.RegisterDelayedCallback(func() {
		v, err := h.env.QueryWorkflow(StateQuery)
		if err != nil {
			t.Errorf("query: %v", err)
		} else if err := v.Get(&state); err != nil {
			t.Errorf("decode: %v", err)
		}
		h.env.SignalWorkflow("go", nil)
	}, time.Minute)
	if _, err := h.run(t, nil); err != nil {
		t.Fatal(err)
	}
	if len(state.Executed) != 1 || state.Executed[0] != "a" || state.Nodes["a"].Output != "one" || state.Done {
		t.Fatalf("state while waiting = %+v", state)
	}
}

// A loop of nodes that never waits is bounded by the work of one workflow task,
// whatever the node limit: it fails the run, naming the reason, long before Temporal's
// deadlock detector. A loop that waits in each round gets a fresh budget each time.
func TestWorkWithoutWaitingIsBounded(t *testing.T) {
	const spin = `{"version": 1, "start": "c", "nodes": {
		"c": {"type": "condition", "if": "count(1..100000, # > 0) >= 0", "then": "c"}}}`
	def, err := Parse([]byte(spin), Catalog{})
	if err != nil {
		t.Fatal(err)
	}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, input any) (any, error) {
		return Execute(ctx, def, input, Options{MaxSteps: 1_000_000})
	}, workflow.RegisterOptions{Name: "spin"})
	env.ExecuteWorkflow("spin", nil)
	err = env.GetWorkflowError()
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != FailureExpression || !strings.Contains(err.Error(), "without waiting") {
		t.Fatalf("a loop that never waits: %v; want an ExpressionError about work without waiting", err)
	}

	const waits = `{"version": 1, "start": "c", "nodes": {
		"c": {"type": "condition", "if": "count(1..100000, # > 0) >= 0", "then": "s"},
		"s": {"type": "sleep", "duration": "1s", "next": "c"}}}`
	def, err = Parse([]byte(waits), Catalog{})
	if err != nil {
		t.Fatal(err)
	}
	env = s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, input any) (any, error) {
		return Execute(ctx, def, input, Options{MaxSteps: 200})
	}, workflow.RegisterOptions{Name: "waits"})
	env.ExecuteWorkflow("waits", nil)
	if err := env.GetWorkflowError(); !errors.As(err, &app) || app.Type() != ErrStepLimit {
		t.Fatalf("a loop that waits each round: %v; want it to run until the node limit", err)
	}
}
