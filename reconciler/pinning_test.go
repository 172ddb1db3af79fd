package reconciler_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler/flow"
)

// waiter is a workflow that waits for the signal "go" and returns its payload marked
// with the version's label.
func waiter(label string) string {
	return fmt.Sprintf(`{"version": 1, "start": "w", "nodes": {
		"w": {"type": "wait_signal", "signal": "go", "next": "r"},
		"r": {"type": "return", "value": "%s: ${nodes.w.output}"}}}`, label)
}

// startWaiting starts a run and returns once it waits on its signal.
func startWaiting(t *testing.T, tc client.Client, queue string) client.WorkflowRun {
	t.Helper()
	ctx := context.Background()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "pin-" + uuid.NewString(), TaskQueue: queue}, "waiter", nil)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		v, err := tc.QueryWorkflow(ctx, run.GetID(), "", flow.StateQuery)
		if err != nil {
			return false, err.Error()
		}
		var s flow.State
		if err := v.Get(&s); err != nil {
			return false, err.Error()
		}
		return s.Steps == 1, fmt.Sprintf("state %+v", s)
	})
	return run
}

func signalAndGet(t *testing.T, tc client.Client, run client.WorkflowRun, payload string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := tc.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), "go", payload); err != nil {
		t.Fatal(err)
	}
	var out string
	if err := run.Get(ctx, &out); err != nil {
		t.Fatalf("run %s: %v", run.GetID(), err)
	}
	return out
}

func compileAndWaitServed(t *testing.T, db *testenv.DB, projectID, workflowID uuid.UUID, code string) {
	t.Helper()
	compile(t, db.Pool, workflowID, code)
	g := generation(t, db.Pool, projectID)
	waitWorker(t, db.Pool, projectID, 30*time.Second, func(r workerRow) bool { return r.Status == "running" && r.Generation == g })
}

// A run keeps the version it started with: through a compile (hot reload), and through
// a full restart of the service (a new process that never saw that version).
func TestRunsArePinnedToTheirVersion(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	svc := startService(t, db)

	id, queue := project(t, db.Pool)
	wf := workflow(t, db.Pool, id, "waiter", waiter("v1"))
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	old := startWaiting(t, tc, queue)
	compileAndWaitServed(t, db, id, wf, waiter("v2"))
	if got := signalAndGet(t, tc, old, "a"); got != "v1: a" {
		t.Fatalf("run started on v1, signalled after v2 was served: %q, want v1's behaviour", got)
	}
	if got := signalAndGet(t, tc, startWaiting(t, tc, queue), "b"); got != "v2: b" {
		t.Fatalf("new run after the compile: %q, want v2", got)
	}

	// Across a full service restart: the run waits on v2, v3 is compiled, the service
	// stops, and a new process (which never loaded v2) takes over.
	onV2 := startWaiting(t, tc, queue)
	compileAndWaitServed(t, db, id, wf, waiter("v3"))
	before, _ := latestWorker(t, db.Pool, id)
	svc.Stop()
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("stopped"))

	proc := testenv.StartProcess(t, testenv.ServiceEnv(t, db), "run")
	after := waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool {
		return r.Status == "running" && r.WorkerID != before.WorkerID
	})
	if after.ProcessID == before.ProcessID {
		t.Fatalf("the new worker runs in the same process %s", after.ProcessID)
	}
	if got := signalAndGet(t, tc, onV2, "c"); got != "v2: c" {
		t.Fatalf("run started on v2, finished after a restart onto v3: %q, want v2's behaviour", got)
	}
	if got := signalAndGet(t, tc, startWaiting(t, tc, queue), "d"); got != "v3: d" {
		t.Fatalf("new run after the restart: %q, want v3", got)
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := proc.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("service exited %d after SIGTERM", code)
	}
}
