package reconciler_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
)

// A response bigger than the cap fails clearly at once (it would not fit a Temporal
// payload anyway), instead of failing with a size error after the request succeeded.
func TestHTTPResponseOverTheCapFailsClearly(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	big := strings.Repeat("x", 3<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(big[:len(big)*len(r.URL.Query().Get("n"))/3]))
	}))
	defer srv.Close()

	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "fetch", `{"version": 1, "start": "h", "nodes": {
		"h": {"type": "activity", "activity": "http.request", "input": {"url": "${input}"}, "next": "r"},
		"r": {"type": "return", "value": "${len(nodes.h.output.body)}"}}}`)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	var n float64
	if err := execute(t, tc, queue, "fetch", srv.URL+"/?n=", &n); err != nil || n != 0 {
		t.Fatalf("an empty response: %v, %v", n, err)
	}
	var out any
	err := execute(t, tc, queue, "fetch", srv.URL+"/?n=xxx", &out)
	if app := failureOfType(err, "HTTPResponseTooLarge"); app == nil || !app.NonRetryable() {
		t.Fatalf("a 3 MiB response: %v, %v; want a non-retryable HTTPResponseTooLarge", out, err)
	}
}

// Cancelling a run stops its long activities instead of letting them finish their
// side effects: an http.request in flight is aborted, a component that spins is
// interrupted and its sandbox freed, within seconds of the cancellation (the
// activities heartbeat and learn of it from the heartbeat's answer).
func TestCancellingARunStopsItsActivities(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	svc := startService(t, db, func(c *reconciler.Config) { c.ComponentTimeout = time.Minute })
	aborted := make(chan time.Time, 1)
	started := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			aborted <- time.Now()
		case <-time.After(time.Minute):
		}
	}))
	defer srv.Close()

	id, queue := project(t, db.Pool)
	addComponent(t, db, id, "spin", `function spin() { while (true) {} }`)
	workflow(t, db.Pool, id, "fetch", `{"version": 1, "start": "h", "nodes": {
		"h": {"type": "activity", "activity": "http.request", "input": {"url": "`+srv.URL+`", "timeout": "2m"}, "timeout": "5m"}}}`)
	workflow(t, db.Pool, id, "spin", `{"version": 1, "start": "s", "nodes": {"s": {"type": "activity", "activity": "spin", "timeout": "5m"}}}`)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	ctx := context.Background()

	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "fetch-" + uuid.NewString(), TaskQueue: queue}, "fetch")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the request did not reach the server")
	}
	cancelled := time.Now()
	if err := tc.CancelWorkflow(ctx, run.GetID(), ""); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-aborted:
		t.Logf("http.request aborted %s after the run was cancelled", at.Sub(cancelled).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("the http.request of a cancelled run went on")
	}

	run, err = tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "spin-" + uuid.NewString(), TaskQueue: queue}, "spin")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		st := svc.ComponentSandboxes()
		return st.Live > st.Idle, fmt.Sprintf("%+v", st)
	})
	cancelled = time.Now()
	if err := tc.CancelWorkflow(ctx, run.GetID(), ""); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		st := svc.ComponentSandboxes()
		return st.Live > 0 && st.Live == st.Idle, fmt.Sprintf("sandboxes %+v: the spinning call is still running", st)
	})
	t.Logf("the spinning component's sandbox was free %s after the run was cancelled", time.Since(cancelled).Round(time.Millisecond))
}
