package reconciler_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
	"github.com/flowbuilder/reconciler/reconciler/component"
)

func addComponent(t *testing.T, db *testenv.DB, projectID uuid.UUID, name, code string) {
	t.Helper()
	exec(t, db.Pool, `INSERT INTO components (project_id, name, implementation_language, implementation_code) VALUES ($1, $2, 'javascript', $3)`, projectID, name, code)
}

// callOnce is a workflow that calls one activity once, without retries.
func callOnce(activity string) string {
	return `{"version": 1, "start": "a", "nodes": {
		"a": {"type": "activity", "activity": "` + activity + `", "input": "${input}", "retry": {"maximum_attempts": 1}}}}`
}

func TestHostileComponentsFailOnlyTheirOwnActivity(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db, func(c *reconciler.Config) {
		c.ComponentTimeout = 5 * time.Second
		c.ComponentMemoryMB = 32
	})

	hostile, hq := project(t, db.Pool)
	hostileCode := map[string]string{
		"spin":   `function spin() { while (true) {} }`,
		"hog":    `function hog() { const a = []; for (;;) a.push("x".repeat(1 << 22) + a.length) }`,
		"big":    `function big() { return "x".repeat(2e9) }`,
		"escape": `function escape(what) { if (what === "require") return require("child_process"); if (what === "process") return process.exit(1); return fetch("http://example.com") }`,
		"broken": `function broken( { return 1 }`,
		"fine":   `function fine(x) { return x + 1 }`,
	}
	for name, code := range hostileCode {
		addComponent(t, db, hostile, name, code)
		workflow(t, db.Pool, hostile, "call_"+name, callOnce(name))
	}
	neighbour, nq := project(t, db.Pool)
	addComponent(t, db, neighbour, "fine", `function fine(x) { return x * 10 }`)
	workflow(t, db.Pool, neighbour, "call_fine", callOnce("fine"))
	setDesired(t, db.Pool, hostile, "running")
	setDesired(t, db.Pool, neighbour, "running")
	before := waitWorker(t, db.Pool, hostile, 30*time.Second, hasStatus("running"))
	waitWorker(t, db.Pool, neighbour, 30*time.Second, hasStatus("running"))
	if msg, _ := before.Metadata["component_errors"].(map[string]any)["broken"].(string); !strings.Contains(msg, "does not compile") {
		t.Errorf("metadata.component_errors.broken = %q, want the syntax error", msg)
	}

	// The neighbour keeps working the whole time.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var neighbourRuns, neighbourFailures int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var out float64
			if err := execute(t, tc, nq, "call_fine", 4, &out); err != nil || out != 40 {
				neighbourFailures++
			}
			neighbourRuns++
		}
	}()

	cases := []struct {
		workflow string
		input    any
		typ      string
		text     string
	}{
		{"call_spin", nil, component.FailureTimeout, "ran longer than 5s"},
		{"call_hog", nil, component.FailureMemory, "grew"},
		{"call_big", nil, "RangeError", "would build a string over"},
		{"call_escape", "require", "ReferenceError", "require is not defined"},
		{"call_escape", "process", "ReferenceError", "process is not defined"},
		{"call_escape", "fetch", "ReferenceError", "fetch is not defined"},
		{"call_broken", nil, component.FailureInvalid, "does not compile"},
	}
	for _, c := range cases {
		var out any
		err := execute(t, tc, hq, c.workflow, c.input, &out)
		app := failureOfType(err, c.typ)
		if app == nil {
			t.Errorf("%s(%v): got %v, want a %s failure", c.workflow, c.input, err, c.typ)
			continue
		}
		if !strings.Contains(app.Error(), c.text) {
			t.Errorf("%s(%v): message %q does not say %q", c.workflow, c.input, app.Error(), c.text)
		}
	}
	close(stop)
	wg.Wait()
	if neighbourRuns == 0 || neighbourFailures > 0 {
		t.Errorf("the other project ran %d workflows meanwhile, %d failed", neighbourRuns, neighbourFailures)
	}

	// The hostile project's own worker is the same one, and still serves.
	var out float64
	if err := execute(t, tc, hq, "call_fine", 1, &out); err != nil || out != 2 {
		t.Fatalf("after the hostile calls, fine returned %v, %v", out, err)
	}
	after, _ := latestWorker(t, db.Pool, hostile)
	if after.WorkerID != before.WorkerID || after.Status != "running" {
		t.Fatalf("worker changed from %s to %s (%s)", before.WorkerID, after.WorkerID, after.Status)
	}
}

func TestComponentThrowFollowsTheNodesRetryPolicy(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	id, queue := project(t, db.Pool)
	addComponent(t, db, id, "flaky", `
		class ValidationError extends Error { constructor(m) { super(m); this.name = "ValidationError" } }
		function flaky(x) { if (x.invalid) throw new ValidationError("bad email"); throw new Error("upstream down") }`)
	workflow(t, db.Pool, id, "retry", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "flaky", "input": "${input}",
		"retry": {"maximum_attempts": 3, "initial_interval": "100ms", "backoff_coefficient": 1, "non_retryable_errors": ["ValidationError"]}}}}`)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	attempts := func(input any, typ string) int32 {
		t.Helper()
		ctx := context.Background()
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "retry-" + uuid.NewString(), TaskQueue: queue}, "retry", input)
		if err != nil {
			t.Fatal(err)
		}
		err = run.Get(ctx, nil)
		if failureOfType(err, typ) == nil {
			t.Fatalf("input %v: got %v, want a %s failure", input, err, typ)
		}
		it := tc.GetWorkflowHistory(ctx, run.GetID(), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			if a := e.GetActivityTaskStartedEventAttributes(); a != nil {
				return a.GetAttempt()
			}
		}
		t.Fatal("no activity started")
		return 0
	}
	if n := attempts(map[string]any{}, "Error"); n != 3 {
		t.Errorf("a retryable throw ran %d attempts, want 3", n)
	}
	if n := attempts(map[string]any{"invalid": true}, "ValidationError"); n != 1 {
		t.Errorf("a non-retryable throw ran %d attempts, want 1", n)
	}
}

// The SSRF test, end to end: with the default configuration a workflow cannot reach
// loopback, the cloud metadata address or a private address.
func TestHTTPRequestRefusesInternalDestinationsByDefault(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db, func(c *reconciler.Config) { c.HTTPAllowPrivate = false })

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secret") }))
	defer api.Close()
	port := api.Listener.Addr().(*net.TCPAddr).Port

	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "fetch", `{"version": 1, "start": "h", "nodes": {
		"h": {"type": "activity", "activity": "http.request", "input": {"url": "${input}", "timeout": "2s"}}}}`)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	for _, target := range []string{
		api.URL,
		fmt.Sprintf("http://localhost:%d/", port),
		"http://169.254.169.254/latest/meta-data/iam/",
		"http://10.20.30.40/",
		"http://192.168.0.1/",
	} {
		var out any
		err := execute(t, tc, queue, "fetch", target, &out)
		app := failureOfType(err, "EgressDenied")
		if app == nil || !app.NonRetryable() {
			t.Errorf("%s: got %v, %v; want a non-retryable EgressDenied failure", target, out, err)
		}
	}
	// A name that does not exist is not retried for ever (the node has no retry
	// policy): it fails at once.
	var out any
	err := execute(t, tc, queue, "fetch", "http://no-such-host.invalid/", &out)
	if app := failureOfType(err, "HTTPHostNotFound"); app == nil || !app.NonRetryable() {
		t.Errorf("an unknown host: got %v, %v; want a non-retryable HTTPHostNotFound failure", out, err)
	}
}

func TestInvalidWorkflowIsNotServedAndTheOthersAre(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "good", greetV1)
	bad := workflow(t, db.Pool, id, "bad", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "sendMail", "next": "b"}}}`)
	workflow(t, db.Pool, id, "badexpr", `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "value": "${input.name +}"}}}`)
	workflow(t, db.Pool, id, "usesbad", `{"version": 1, "start": "c", "nodes": {"c": {"type": "child_workflow", "workflow": "bad"}}}`)
	setDesired(t, db.Pool, id, "running")
	row := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	errs, _ := row.Metadata["workflow_errors"].(map[string]any)
	for name, want := range map[string]string{
		"bad":     `unknown activity "sendMail"`,
		"badexpr": "bad expression",
		"usesbad": `child workflow "bad" is not served`,
	} {
		if msg, _ := errs[name].(string); !strings.Contains(msg, want) {
			t.Errorf("workflow_errors.%s = %q, want it to say %q", name, msg, want)
		}
	}
	if _, listed := errs["good"]; listed {
		t.Error("the valid workflow is listed in workflow_errors")
	}
	var greeting string
	if err := execute(t, tc, queue, "good", map[string]any{"name": "Ada"}, &greeting); err != nil || greeting != "Hello, Ada!" {
		t.Fatalf("good: %q, %v", greeting, err)
	}

	// A run of the unserved workflow waits (its workflow task fails and is retried)...
	ctx := context.Background()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "bad-" + uuid.NewString(), TaskQueue: queue}, "bad", nil)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		return historyHas(t, tc, run.GetID(), enumspb.EVENT_TYPE_WORKFLOW_TASK_FAILED), "no failed workflow task yet"
	})
	// ...and completes once a valid version is compiled: nothing was lost.
	compile(t, db.Pool, bad, `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "value": "fixed"}}}`)
	var fixed string
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := run.Get(waitCtx, &fixed); err != nil || fixed != "fixed" {
		t.Fatalf("after the fix, the waiting run returned %q, %v", fixed, err)
	}
}
