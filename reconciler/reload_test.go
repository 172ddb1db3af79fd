package reconciler_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

func labelled(label string) string {
	return fmt.Sprintf(`{"version": 1, "start": "a", "nodes": {
		"a": {"type": "activity", "activity": "echo", "input": "%s", "next": "r"},
		"r": {"type": "return", "value": "${nodes.a.output}"}}}`, label)
}

// Workflows keep starting in a loop while ten compiles land: no run fails, no workflow
// task fails, the worker is never replaced, and the runs move from version to version.
func TestReloadUnderLoadDropsNothing(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	id, queue := project(t, db.Pool)
	wf := workflow(t, db.Pool, id, "labelled", labelled("v1"))
	setDesired(t, db.Pool, id, "running")
	first := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	var (
		mu       sync.Mutex
		ids      []string
		failures []string
		seen     = map[string]int{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "reload-" + uuid.NewString(), TaskQueue: queue}, "labelled", nil)
				var out string
				if err == nil {
					err = run.Get(ctx, &out)
				}
				cancel()
				mu.Lock()
				if run != nil {
					ids = append(ids, run.GetID())
				}
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					seen[out]++
				}
				mu.Unlock()
			}
		}()
	}
	for v := 2; v <= 11; v++ {
		label := fmt.Sprintf("v%d", v)
		compileAndWaitServed(t, db, id, wf, labelled(label))
		// Each compile lands while runs are in flight: wait for runs on this version.
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return seen[label] >= 3, "fewer than 3 runs on " + label
		})
	}
	close(stop)
	wg.Wait()

	if len(failures) > 0 {
		t.Errorf("%d of %d runs failed, first: %s", len(failures), len(ids), failures[0])
	}
	failedTasks := 0
	for _, wid := range ids {
		if historyHas(t, tc, wid, enumspb.EVENT_TYPE_WORKFLOW_TASK_FAILED) {
			failedTasks++
		}
	}
	if failedTasks > 0 {
		t.Errorf("%d of %d runs had a failed workflow task", failedTasks, len(ids))
	}
	last, _ := latestWorker(t, db.Pool, id)
	if last.WorkerID != first.WorkerID {
		t.Errorf("the compiles replaced worker %s by %s; they must reload it", first.WorkerID, last.WorkerID)
	}
	var versions []string
	for v, n := range seen {
		versions = append(versions, fmt.Sprintf("%s×%d", v, n))
	}
	t.Logf("%d runs during 10 compiles: %s", len(ids), strings.Join(versions, " "))
	if len(seen) < 10 {
		t.Errorf("runs saw only %v: the loop did not overlap the compiles", seen)
	}
}
