package reconciler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
	"github.com/flowbuilder/reconciler/reconciler/flow"
)

// The extended definition format (SPEC "4, continued"), compiled through SQL and run
// on the dev server through a Temporal client.

const declineComponent = `class Declined extends Error { constructor(m) { super(m); this.name = "Declined" } }
function charge(x) { if (x && x.ok) return "charged"; throw new Declined("card declined") }`

var extendedWorkflows = map[string]string{
	"catch_type": `{"version": 1, "start": "c", "nodes": {
		"c": {"type": "activity", "activity": "charge", "retry": {"maximum_attempts": 2, "initial_interval": "100ms"},
		      "catch": [{"errors": ["Timeout"], "next": "other"}, {"errors": ["Declined"], "next": "declined"}]},
		"declined": {"type": "return", "value": {"route": "declined", "error": "${nodes.c.error}"}},
		"other": {"type": "return", "value": {"route": "other"}}}}`,
	"catch_star": `{"version": 1, "start": "c", "nodes": {
		"c": {"type": "activity", "activity": "charge", "retry": {"maximum_attempts": 1},
		      "catch": [{"errors": ["Timeout"], "next": "other"}, {"errors": ["*"], "next": "any"}]},
		"any": {"type": "return", "value": {"route": "any", "type": "${nodes.c.error.cause.type}"}},
		"other": {"type": "return", "value": {"route": "other"}}}}`,
	"uncaught": `{"version": 1, "start": "c", "nodes": {
		"c": {"type": "activity", "activity": "charge", "retry": {"maximum_attempts": 1}, "catch": [{"errors": ["Timeout"], "next": "r"}]},
		"r": {"type": "return", "value": "caught"}}}`,
	"default_retry": `{"version": 1, "start": "c", "nodes": {"c": {"type": "activity", "activity": "charge"}}}`,
	"switch": `{"version": 1, "start": "s", "nodes": {
		"s": {"type": "switch", "cases": [{"if": "input.amount > 1000", "next": "big"}, {"if": "input.amount > 100", "next": "mid"}], "default": "small"},
		"big": {"type": "return", "value": "big"},
		"mid": {"type": "return", "value": "mid (case ${nodes.s.output})"},
		"small": {"type": "return", "value": "small (${nodes.s.output})"}}}`,
	"with_sets": `{"version": 1, "start": "a", "nodes": {
		"a": {"type": "set", "values": {"n": "${input.n}"}, "next": "b"},
		"b": {"type": "set", "values": "${nodes.a.output.n * 2}", "next": "r"},
		"r": {"type": "return", "value": "${nodes.b.output}"}}}`,
	"without_sets": `{"version": 1, "start": "r", "nodes": {"r": {"type": "return", "value": "${input.n * 2}"}}}`,
	"deadline": `{"version": 1, "start": "w", "timeout": "500ms", "nodes": {
		"w": {"type": "wait_signal", "signal": "go", "next": "r"},
		"r": {"type": "return", "value": "in time"}}}`,
	"first_of": `{"version": 1, "start": "s", "nodes": {
		"s": {"type": "sleep", "until": "${input.at}", "next": "w"},
		"w": {"type": "wait_signal", "any": [{"signal": "approve", "next": "yes"}, {"signal": "reject", "next": "no"}]},
		"yes": {"type": "return", "value": "approved"},
		"no": {"type": "return", "value": {"by": "${nodes.w.output}", "last": "${signals.reject}", "type": "${workflow.type}", "id": "${workflow.id}", "attempt": "${workflow.attempt}"}}}}`,
	"echo_input": `{"version": 1, "start": "r", "nodes": {"r": {"type": "return", "value": "${input}"}}}`,
	"counter": `{"version": 1, "start": "c", "nodes": {
		"c": {"type": "condition", "if": "input.n >= 3", "then": "r", "else": "again"},
		"again": {"type": "continue_as_new", "input": {"n": "${input.n + 1}"}},
		"r": {"type": "return", "value": "counted to ${input.n}"}}}`,
}

// runsOf lists the runs of a workflow id, newest first, following continue-as-new
// back from the current run.
func runsOf(t *testing.T, tc client.Client, workflowID string) []*historypb.History {
	t.Helper()
	ctx := context.Background()
	desc, err := tc.DescribeWorkflowExecution(ctx, workflowID, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []*historypb.History
	for runID := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId(); runID != ""; {
		h := &historypb.History{}
		it := tc.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			h.Events = append(h.Events, e)
		}
		out = append(out, h)
		runID = h.Events[0].GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
	}
	return out
}

func eventTypes(h *historypb.History) []string {
	var out []string
	for _, e := range h.Events {
		out = append(out, e.GetEventType().String())
	}
	return out
}

func TestExtendedNodesRunOnTemporal(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	id, queue := project(t, db.Pool)
	addComponent(t, db, id, "charge", declineComponent)
	for name, code := range extendedWorkflows {
		workflow(t, db.Pool, id, name, code)
	}
	setDesired(t, db.Pool, id, "running")
	row := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	if errs := row.Metadata["workflow_errors"]; errs != nil {
		t.Fatalf("workflows not served: %v", errs)
	}
	ctx := context.Background()
	start := func(name string, args ...any) client.WorkflowRun {
		t.Helper()
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: name + "-" + uuid.NewString(), TaskQueue: queue}, name, args...)
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		return run
	}
	result := func(run client.WorkflowRun) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		var out any
		err := run.Get(ctx, &out)
		return out, err
	}
	check := func(name string, want string, args ...any) {
		t.Helper()
		out, err := result(start(name, args...))
		if got, _ := json.Marshal(out); err != nil || string(got) != want {
			t.Errorf("%s: %s, %v; want %s", name, got, err, want)
		}
	}
	// The default retry waits 1 s and 2 s between its attempts: start it first.
	defaultRetry := start("default_retry")

	// catch: by type after the retries, by "*", and no match.
	check("catch_type", `{"error":{"cause":{"cause":null,"message":"component charge threw Declined: card declined","type":"Declined"},"message":"node \"c\": activity charge failed: Declined: component charge threw Declined: card declined","type":"ActivityFailed"},"route":"declined"}`)
	check("catch_star", `{"route":"any","type":"Declined"}`)
	_, err := result(start("uncaught"))
	if app := failureOfType(err, flow.FailureActivity); app == nil || !strings.Contains(app.Error(), "Declined: card declined") {
		t.Errorf("uncaught: %v, want ActivityFailed carrying the root cause", err)
	}
	// catch_type made 2 attempts before routing.
	run := start("catch_type")
	if _, err := result(run); err != nil {
		t.Fatal(err)
	}
	for _, e := range runsOf(t, tc, run.GetID())[0].Events {
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil && a.GetAttempt() != 2 {
			t.Errorf("catch_type: the activity ended at attempt %d, want 2", a.GetAttempt())
		}
	}

	// switch: first true case, default; its output is the case's position.
	check("switch", `"big"`, map[string]any{"amount": 5000})
	check("switch", `"mid (case 1)"`, map[string]any{"amount": 500})
	check("switch", `"small (null)"`, map[string]any{"amount": 5})

	// set adds no event to the history: two sets and a return, or just the return.
	with, without := start("with_sets", map[string]any{"n": 21}), start("without_sets", map[string]any{"n": 21})
	for _, r := range []client.WorkflowRun{with, without} {
		if out, err := result(r); err != nil || fmt.Sprint(out) != "42" {
			t.Fatalf("%s: %v, %v", r.GetID(), out, err)
		}
	}
	a, b := eventTypes(runsOf(t, tc, with.GetID())[0]), eventTypes(runsOf(t, tc, without.GetID())[0])
	if strings.Join(a, ",") != strings.Join(b, ",") {
		t.Errorf("history with set nodes:\n%v\nwithout:\n%v", a, b)
	}

	// timeout
	_, err = result(start("deadline"))
	if failureOfType(err, flow.FailureTimeout) == nil {
		t.Errorf("deadline: %v, want %s", err, flow.FailureTimeout)
	}

	// sleep until, wait_signal any, workflow.* and signals.<name>.
	at := time.Now().Add(300 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	run = start("first_of", map[string]any{"at": at})
	if err := tc.SignalWorkflow(ctx, run.GetID(), "", "reject", "Bob"); err != nil {
		t.Fatal(err)
	}
	out, err := result(run)
	if got, _ := json.Marshal(out); err != nil || string(got) != fmt.Sprintf(`{"attempt":1,"by":"Bob","id":%q,"last":"Bob","type":"first_of"}`, run.GetID()) {
		t.Errorf("first_of: %s, %v", got, err)
	}
	if !historyHas(t, tc, run.GetID(), enumspb.EVENT_TYPE_TIMER_STARTED) {
		t.Error("sleep until left no timer")
	}

	// The workflow input: the first argument; {} without; several, or too large, fail.
	check("echo_input", `{}`)
	check("echo_input", `{"a":1}`, map[string]any{"a": 1})
	_, err = result(start("echo_input", 1, 2))
	if app := failureOfType(err, flow.FailureInput); app == nil || !strings.Contains(app.Error(), "2 arguments") {
		t.Errorf("two arguments: %v", err)
	}
	_, err = result(start("echo_input", strings.Repeat("x", flow.MaxPayload+1000)))
	if app := failureOfType(err, flow.FailureInput); app == nil || !strings.Contains(app.Error(), "bytes") {
		t.Errorf("a large input: %v", err)
	}

	// continue_as_new: three runs, one pinned version.
	run = start("counter", map[string]any{"n": 1})
	if out, err := result(run); err != nil || out != "counted to 3" {
		t.Fatalf("counter: %v, %v", out, err)
	}
	runs := runsOf(t, tc, run.GetID())
	if len(runs) != 3 {
		t.Fatalf("counter ran %d runs, want 3", len(runs))
	}
	v, err := tc.QueryWorkflow(ctx, run.GetID(), "", flow.StateQuery)
	if err != nil {
		t.Fatal(err)
	}
	var state flow.State
	if err := v.Get(&state); err != nil || state.Pinned["version"] != float64(1) {
		t.Errorf("the last run's state: %+v, %v", state, err)
	}

	// Without retry, an activity makes 3 attempts.
	_, err = result(defaultRetry)
	if failureOfType(err, "Declined") == nil {
		t.Errorf("default_retry: %v", err)
	}
	for _, e := range runsOf(t, tc, defaultRetry.GetID())[0].Events {
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil && a.GetAttempt() != 3 {
			t.Errorf("default_retry: the activity ended at attempt %d, want 3", a.GetAttempt())
		}
	}
}

// A foreach over 1,000 items, 10 at a time: the result is in item order, and never
// more than 10 activities are pending.
func TestForeachOfAThousandItems(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "thousand", `{"version": 1, "start": "f", "nodes": {
		"f": {"type": "foreach", "items": "${input.items}", "as": "item", "concurrency": 10, "body": "double", "next": "r"},
		"double": {"type": "activity", "activity": "echo", "input": {"at": "${index}", "value": "${item * 2}"}, "next": "pick"},
		"pick": {"type": "set", "values": "${nodes.double.output.at == index ? nodes.double.output.value : -1}"},
		"r": {"type": "return", "value": "${nodes.f.output}"}}}`)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	items := make([]int, 1000)
	for i := range items {
		items[i] = 1000 - i // descending: order is not sorting
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "thousand-" + uuid.NewString(), TaskQueue: queue}, "thousand", map[string]any{"items": items})
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	if err := run.Get(ctx, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("1,000 activities, 10 at a time: %s", time.Since(began).Round(time.Millisecond))
	if len(out) != len(items) {
		t.Fatalf("%d results", len(out))
	}
	for i, v := range out {
		if v != items[i]*2 {
			t.Fatalf("result %d is %d, want %d", i, v, items[i]*2)
		}
	}
	pending, most := 0, 0
	for _, h := range runsOf(t, tc, run.GetID()) {
		for _, e := range h.Events {
			switch e.GetEventType() {
			case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
				pending++
				most = max(most, pending)
			case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
				pending--
			}
		}
	}
	if most != 10 {
		t.Errorf("at most %d activities were pending at once, want 10", most)
	}
}

// counting wraps the service's own CompiledLoader (a query) to count its calls.
func counting(l reconciler.CompiledLoader, calls *atomic.Int32) reconciler.CompiledLoader {
	return func(ctx context.Context, project uuid.UUID, name string, id uuid.UUID) (int32, string, error) {
		calls.Add(1)
		return l(ctx, project, name, id)
	}
}

// longLoop is a foreach over 20,000 items; every 100th calls an activity, so that the
// history grows. The iteration of item 10,000 waits for the signal "half".
func longLoop(label string) string {
	return `{"version": 1, "start": "loop", "nodes": {
		"loop": {"type": "foreach", "items": "${1..20000}", "as": "n", "body": "which", "next": "r"},
		"which": {"type": "switch", "cases": [{"if": "n == 10000", "next": "half"}, {"if": "int(n) % 100 == 0", "next": "call"}], "default": "square"},
		"half": {"type": "wait_signal", "signal": "half", "next": "square"},
		"call": {"type": "activity", "activity": "echo", "input": "${n}", "next": "square"},
		"square": {"type": "set", "values": "${int(n) * int(n) % 7}"},
		"r": {"type": "return", "value": {"version": "` + label + `", "count": "${len(nodes.loop.output)}", "sum": "${sum(nodes.loop.output)}"}}}}`
}

// A loop over 20,000 items completes through automatic continue-as-new, every run
// keeping the version the first started with (a newer one is compiled and served
// halfway), each run's history far under Temporal's limit. The dev server suggests
// continuing as new past 100 events (limit.historyCount.suggestContinueAsNew).
func TestLongLoopContinuesAsNewOnItsVersion(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivateTemporal(t, "limit.historyCount.suggestContinueAsNew=100")
	db := testenv.Database(t)
	tc := testenv.TemporalClientOf(t, srv.Address())
	svc := startService(t, db, func(c *reconciler.Config) { c.TemporalAddress = srv.Address() })
	var loads atomic.Int32
	svc.SetCompiledLoader(counting(svc.CompiledLoader(), &loads))
	id, queue := project(t, db.Pool)
	wf := workflow(t, db.Pool, id, "long", longLoop("v1"))
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "long-" + uuid.NewString(), TaskQueue: queue}, "long")
	if err != nil {
		t.Fatal(err)
	}
	// Halfway (the run waits for "half", after continuing as new at least once), v2 is
	// compiled and served; then the loop goes on.
	testenv.Eventually(t, 2*time.Minute, func() (bool, string) {
		v, err := tc.QueryWorkflow(ctx, run.GetID(), "", flow.StateQuery)
		if err != nil {
			return false, err.Error()
		}
		var s flow.State
		if err := v.Get(&s); err != nil {
			return false, err.Error()
		}
		n := len(s.Executed)
		return n > 0 && s.Executed[n-1] == "which" && s.Nodes["which"].Output == float64(0), fmt.Sprintf("%d nodes executed, the last %v", n, s.Executed[max(n-3, 0):])
	})
	first := len(runsOf(t, tc, run.GetID()))
	compileAndWaitServed(t, db, id, wf, longLoop("v2"))
	if err := tc.SignalWorkflow(ctx, run.GetID(), "", "half", nil); err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := run.Get(ctx, &out); err != nil {
		runs := runsOf(t, tc, run.GetID())
		last := runs[0].Events
		t.Fatalf("%v after %d runs; the last run's last events: %v", err, len(runs), eventTypes(&historypb.History{Events: last[max(len(last)-5, 0):]}))
	}
	runs := runsOf(t, tc, run.GetID())
	t.Logf("20,000 items in %d runs (%d before the compile), %s; %d loads of the pinned version", len(runs), first, time.Since(began).Round(time.Millisecond), loads.Load())
	var sum float64
	for n := 1; n <= 20000; n++ {
		sum += float64(n * n % 7)
	}
	if out["version"] != "v1" || out["count"] != float64(20000) || out["sum"] != sum {
		t.Fatalf("result %v, want v1's, 20000 items, sum %v", out, sum)
	}
	if first < 2 || len(runs) <= first {
		t.Errorf("%d runs before the compile, %d in all: want continue-as-new on both sides", first, len(runs))
	}
	if loads.Load() == 0 {
		t.Error("the runs after the compile did not load their pinned version")
	}
	for i, h := range runs {
		if n := len(h.Events); n > 400 {
			t.Errorf("run %d has %d events", len(runs)-i, n)
		}
	}
	// A client cannot pin a version: a second argument of a run it starts is refused.
	fake, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "forged-" + uuid.NewString(), TaskQueue: queue}, "long",
		map[string]any{}, flow.Continued{Pin: uuid.NewString(), Resume: &flow.Resume{At: "r"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Get(ctx, new(any)); failureOfType(err, flow.FailureInput) == nil {
		t.Errorf("a run started with a forged continuation: %v, want %s", err, flow.FailureInput)
	}
}
