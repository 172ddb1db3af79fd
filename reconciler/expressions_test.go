package reconciler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler/flow"
)

// returns is a definition whose return node evaluates value.
func returns(value string) string {
	v, _ := json.Marshal("${" + value + "}")
	return `{"version": 1, "start": "r", "nodes": {"r": {"type": "return", "value": ` + string(v) + `}}}`
}

// heapAndGoroutines is the process's live heap (after a collection) and goroutines.
func heapAndGoroutines() (uint64, int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, runtime.NumGoroutine()
}

// Hostile expressions (a string of 40 GB in two repeats, a reduce that builds a
// gigabyte, a loop of nodes that never waits, twenty slow ones at once) fail their own
// run with ExpressionError, while another project's workflows keep completing; the
// process's heap and goroutines come back to where they were, so nothing keeps
// computing after the runs are over.
func TestHostileExpressionsFailOnlyTheirRun(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)

	hostile, hq := project(t, db.Pool)
	cases := map[string]string{
		"repeat":   returns(`len(repeat(repeat("x", 40000), 1000000))`),
		"gigabyte": returns(`len(reduce(1..100000000, #acc + "xxxxxxxxxx", ""))`),
		"builder":  returns(`len(reduce(1..200000, #acc + "xxxxxxxxxx", ""))`),
		"spin": `{"version": 1, "start": "c", "nodes": {
			"c": {"type": "condition", "if": "count(1..100000, # > 0) >= 0", "then": "c"}}}`,
	}
	for name, code := range cases {
		workflow(t, db.Pool, hostile, name, code)
	}
	victim, vq := project(t, db.Pool)
	workflow(t, db.Pool, victim, "greet", greetV1)
	setDesired(t, db.Pool, hostile, "running")
	setDesired(t, db.Pool, victim, "running")
	waitWorker(t, db.Pool, hostile, 30*time.Second, hasStatus("running"))
	waitWorker(t, db.Pool, victim, 30*time.Second, hasStatus("running"))
	var out string
	if err := execute(t, tc, vq, "greet", map[string]any{"name": "warm"}, &out); err != nil {
		t.Fatal(err)
	}
	heapBefore, goroutinesBefore := heapAndGoroutines()

	stop := make(chan struct{})
	victimDone := make(chan [2]int)
	go func() {
		runs, failures := 0, 0
		for {
			select {
			case <-stop:
				victimDone <- [2]int{runs, failures}
				return
			default:
			}
			var out string
			if err := execute(t, tc, vq, "greet", map[string]any{"name": "victim"}, &out); err != nil || out != "Hello, victim!" {
				failures++
			}
			runs++
		}
	}()

	for name := range cases {
		var out any
		err := execute(t, tc, hq, name, nil, &out)
		app := failureOfType(err, flow.FailureExpression)
		if app == nil || !app.NonRetryable() {
			t.Errorf("%s: got %v, %v; want a non-retryable ExpressionError", name, out, err)
			continue
		}
		t.Logf("%s: %s", name, oneLine(app.Error()))
	}

	// Twenty slow (but bounded) expressions at once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("slow-%d-%s", i, uuid.NewString()), TaskQueue: hq}, "builder")
			if err == nil {
				err = run.Get(ctx, nil)
			}
			if failureOfType(err, flow.FailureExpression) != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed != 20 {
		t.Errorf("%d of 20 slow expressions failed with ExpressionError", failed)
	}

	close(stop)
	v := <-victimDone
	if v[0] == 0 || v[1] > 0 {
		t.Errorf("the victim project completed %d runs with %d failures meanwhile; want some and none failed", v[0], v[1])
	}
	t.Logf("victim: %d runs completed meanwhile", v[0])
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		heap, goroutines := heapAndGoroutines()
		return heap < heapBefore+64<<20 && goroutines <= goroutinesBefore+20,
			fmt.Sprintf("heap %d MiB (before %d MiB), goroutines %d (before %d)", heap>>20, heapBefore>>20, goroutines, goroutinesBefore)
	})
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
