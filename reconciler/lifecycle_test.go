package reconciler_test

import (
	"context"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

const greetV1 = `{
  "version": 1,
  "start": "greet",
  "nodes": {
    "greet": {"type": "activity", "activity": "echo",
              "input": {"message": "Hello, ${input.name}!"}, "next": "done"},
    "done":  {"type": "return", "value": "${nodes.greet.output.message}"}
  }
}`

const greetV2 = `{
  "version": 1,
  "start": "greet",
  "nodes": {
    "greet": {"type": "activity", "activity": "echo",
              "input": {"message": "Goodbye, ${input.name}!"}, "next": "done"},
    "done":  {"type": "return", "value": "${nodes.greet.output.message}"}
  }
}`

// pollers lists the identities polling a task queue for workflow tasks. The test server
// forgets a poller 5 s after its last poll (testenv.TemporalDynamicConfig), so a
// stopped worker drops out of the list within seconds.
func pollers(t *testing.T, tc client.Client, queue string) map[string]bool {
	t.Helper()
	resp, err := tc.DescribeTaskQueue(context.Background(), queue, enumspb.TASK_QUEUE_TYPE_WORKFLOW)
	if err != nil {
		t.Fatalf("describe task queue %s: %v", queue, err)
	}
	out := map[string]bool{}
	for _, p := range resp.GetPollers() {
		out[p.GetIdentity()] = true
	}
	return out
}

func TestDesiredStatusStartsAndStopsAWorker(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)

	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")

	row := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	if row.Host == "" || row.ProcessID == "" {
		t.Errorf("running row lacks host or process_id: %+v", row)
	}
	if want := generation(t, db.Pool, id); row.Generation != want {
		t.Errorf("row generation = %d, project generation = %d", row.Generation, want)
	}
	if got := row.Metadata["workflows"].(map[string]any)["greet"]; got != float64(1) {
		t.Errorf("metadata.workflows.greet = %v, want version 1", got)
	}

	var result string
	if err := execute(t, tc, queue, "greet", map[string]any{"name": "Ada"}, &result); err != nil {
		t.Fatalf("execute greet: %v", err)
	}
	if result != "Hello, Ada!" {
		t.Fatalf("greet returned %q, want %q", result, "Hello, Ada!")
	}
	if !pollers(t, tc, queue)[row.WorkerID] {
		t.Fatalf("worker %s does not appear among the task queue's pollers", row.WorkerID)
	}

	setDesired(t, db.Pool, id, "stopped")
	stopped := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("stopped"))
	if stopped.WorkerID != row.WorkerID {
		t.Fatalf("stopped row is %s, want the running worker %s", stopped.WorkerID, row.WorkerID)
	}
	if stopped.StoppedAt == nil {
		t.Errorf("stopped row has no stopped_at")
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		p := pollers(t, tc, queue)
		return !p[row.WorkerID], "worker still listed among pollers"
	})
}

func TestCompileReloadsTheWorker(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)

	id, queue := project(t, db.Pool)
	wf := workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	first := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	var result string
	if err := execute(t, tc, queue, "greet", map[string]any{"name": "Ada"}, &result); err != nil || result != "Hello, Ada!" {
		t.Fatalf("v1 returned %q, %v", result, err)
	}

	before := generation(t, db.Pool, id)
	compile(t, db.Pool, wf, greetV2)
	after := generation(t, db.Pool, id)
	if after != before+1 {
		t.Fatalf("compile moved generation from %d to %d, want +1", before, after)
	}
	reloaded := waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool {
		return r.Status == "running" && r.Generation == after
	})
	if reloaded.WorkerID != first.WorkerID {
		t.Errorf("compile replaced worker %s by %s; a reload keeps the worker", first.WorkerID, reloaded.WorkerID)
	}
	if err := execute(t, tc, queue, "greet", map[string]any{"name": "Ada"}, &result); err != nil || result != "Goodbye, Ada!" {
		t.Fatalf("after compile, greet returned %q, %v; want %q", result, err, "Goodbye, Ada!")
	}
}
