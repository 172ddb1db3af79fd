package reconciler_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// A run of a workflow type the project does not serve waits through the grace period
// (a compile or an activation may still come), then fails with WorkflowNotServed
// instead of waiting for ever.
func TestRunOfAnUnservedWorkflowFailsAfterTheGrace(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db, func(c *reconciler.Config) { c.UnservedGrace = 2 * time.Second })
	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "nobody-" + uuid.NewString(), TaskQueue: queue}, "nobody", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = run.Get(ctx, nil)
	app := failureOfType(err, "WorkflowNotServed")
	if app == nil || !app.NonRetryable() {
		t.Fatalf("a run of an unserved workflow: %v; want a non-retryable WorkflowNotServed failure", err)
	}
	if waited := time.Since(began); waited < 2*time.Second {
		t.Errorf("it failed after %s, within the grace period", waited)
	}
	t.Logf("failed after %s: %s", time.Since(began).Round(time.Millisecond), app.Error())
}
