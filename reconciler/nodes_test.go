package reconciler_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler/flow"
)

// failureOfType finds an application failure of that type anywhere in err's chain.
func failureOfType(err error, typ string) *temporal.ApplicationError {
	for err != nil {
		var app *temporal.ApplicationError
		if !errors.As(err, &app) {
			return nil
		}
		if app.Type() == typ {
			return app
		}
		err = app.Unwrap()
	}
	return nil
}

// historyHas reports whether a run's history holds an event of that type.
func historyHas(t *testing.T, tc client.Client, workflowID string, event enumspb.EventType) bool {
	t.Helper()
	it := tc.GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e.GetEventType() == event {
			return true
		}
	}
	return false
}

// Every node type of SPEC section 4, compiled through SQL and run on the dev server.
func TestEveryNodeTypeRunsOnTemporal(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"you_asked_for": %q}`, r.URL.Query().Get("q"))
	}))
	defer api.Close()

	id, queue := project(t, db.Pool)
	exec(t, db.Pool, `INSERT INTO components (project_id, name, implementation_language, implementation_code)
		VALUES ($1, 'vat', 'javascript', 'async function vat(x) { console.log("vat for", x.net); return {gross: Math.round(x.net * 1.2 * 100) / 100} }')`, id)
	workflows := map[string]string{
		"activity": `{"version": 1, "start": "a", "nodes": {
			"a": {"type": "activity", "activity": "echo", "input": {"n": "${input.n * 2}"}, "timeout": "10s",
			      "retry": {"maximum_attempts": 2, "initial_interval": "1s"}, "next": "c"},
			"c": {"type": "activity", "activity": "vat", "input": {"net": "${nodes.a.output.n}"}, "next": "h"},
			"h": {"type": "activity", "activity": "http.request", "input": {"url": "` + api.URL + `/?q=${nodes.c.output.gross}"}, "next": "r"},
			"r": {"type": "return", "value": "${nodes.h.output.body.you_asked_for}"}}}`,
		"condition": `{"version": 1, "start": "c", "nodes": {
			"c": {"type": "condition", "if": "input.amount > 100", "then": "big", "else": "small"},
			"big": {"type": "return", "value": "big"},
			"small": {"type": "return", "value": "small"}}}`,
		"sleep": `{"version": 1, "start": "s", "nodes": {
			"s": {"type": "sleep", "duration": "${input.wait}", "next": "r"},
			"r": {"type": "return", "value": "woke"}}}`,
		"parallel": `{"version": 1, "start": "p", "nodes": {
			"p": {"type": "parallel", "branches": ["a", "b"], "next": "r"},
			"a": {"type": "activity", "activity": "echo", "input": "left"},
			"b": {"type": "sleep", "duration": "50ms", "next": "b2"},
			"b2": {"type": "activity", "activity": "echo", "input": "right"},
			"r": {"type": "return", "value": "${nodes.p.output}"}}}`,
		"approval": `{"version": 1, "start": "w", "nodes": {
			"w": {"type": "wait_signal", "signal": "approve", "next": "r"},
			"r": {"type": "return", "value": "approved by ${nodes.w.output.by}"}}}`,
		"deadline": `{"version": 1, "start": "w", "nodes": {
			"w": {"type": "wait_signal", "signal": "approve", "timeout": "300ms", "next": "ok", "on_timeout": "late"},
			"ok": {"type": "return", "value": "approved"},
			"late": {"type": "return", "value": "timed out"}}}`,
		"parent": `{"version": 1, "start": "c", "nodes": {
			"c": {"type": "child_workflow", "workflow": "double", "input": {"n": "${input.n}"}, "next": "r"},
			"r": {"type": "return", "value": "${nodes.c.output}"}}}`,
		"double": `{"version": 1, "start": "r", "nodes": {"r": {"type": "return", "value": "${input.n * 2}"}}}`,
		"reject": `{"version": 1, "start": "f", "nodes": {"f": {"type": "fail", "message": "order ${input.id} rejected"}}}`,
	}
	for name, code := range workflows {
		workflow(t, db.Pool, id, name, code)
	}
	setDesired(t, db.Pool, id, "running")
	row := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	if errs := row.Metadata["workflow_errors"]; errs != nil {
		t.Fatalf("workflows not served: %v", errs)
	}

	check := func(name string, input, want any) {
		t.Helper()
		var got any
		if err := execute(t, tc, queue, name, input, &got); err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s returned %v, want %v", name, got, want)
		}
	}
	check("activity", map[string]any{"n": 5}, "12")
	check("condition", map[string]any{"amount": 500}, "big")
	check("condition", map[string]any{"amount": 5}, "small")
	check("parallel", nil, []any{"left", "right"})
	check("deadline", nil, "timed out")
	check("parent", map[string]any{"n": 21}, 42)

	// sleep is a durable timer, visible in the history.
	ctx := context.Background()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "sleep-" + uuid.NewString(), TaskQueue: queue}, "sleep", map[string]any{"wait": "200ms"})
	if err != nil {
		t.Fatal(err)
	}
	var woke string
	if err := run.Get(ctx, &woke); err != nil || woke != "woke" {
		t.Fatalf("sleep: %q, %v", woke, err)
	}
	if !historyHas(t, tc, run.GetID(), enumspb.EVENT_TYPE_TIMER_STARTED) {
		t.Error("sleep left no timer in the history")
	}

	// wait_signal: query the state while it waits, then signal.
	run, err = tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "approval-" + uuid.NewString(), TaskQueue: queue}, "approval", nil)
	if err != nil {
		t.Fatal(err)
	}
	var state flow.State
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		v, err := tc.QueryWorkflow(ctx, run.GetID(), "", flow.StateQuery)
		if err != nil {
			return false, err.Error()
		}
		if err := v.Get(&state); err != nil {
			return false, err.Error()
		}
		return state.Steps == 1 && !state.Done, fmt.Sprintf("state %+v", state)
	})
	if state.Pinned["version"] != float64(1) {
		t.Errorf("state query pinned = %v, want version 1", state.Pinned)
	}
	if err := tc.SignalWorkflow(ctx, run.GetID(), "", "approve", map[string]any{"by": "Grace"}); err != nil {
		t.Fatal(err)
	}
	var approved string
	if err := run.Get(ctx, &approved); err != nil || approved != "approved by Grace" {
		t.Fatalf("approval: %q, %v", approved, err)
	}
	v, err := tc.QueryWorkflow(ctx, run.GetID(), "", flow.StateQuery)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Get(&state); err != nil || !state.Done || strings.Join(state.Executed, ",") != "w,r" {
		t.Fatalf("state after the run: %+v, %v", state, err)
	}

	// fail ends the run as failed, with the message, not retried.
	var ignored any
	err = execute(t, tc, queue, "reject", map[string]any{"id": 7}, &ignored)
	if app := failureOfType(err, flow.FailureWorkflow); app == nil || !strings.Contains(app.Error(), "order 7 rejected") || !app.NonRetryable() {
		t.Fatalf("reject: %v", err)
	}
}
