package reconciler_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
	"github.com/flowbuilder/reconciler/reconciler/component"
)

// callDefault calls one activity with the node's default retry policy (Temporal's:
// unlimited attempts), so that only a non-retryable failure ends the run.
func callDefault(activity string) string {
	return `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "` + activity + `", "input": "${input}"}}}`
}

// serviceFootprint is this process's live heap (after a collection), resident memory
// and goroutines: the service under test and the harness.
func serviceFootprint() (heap, rss uint64, goroutines int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b, _ := os.ReadFile("/proc/self/statm")
	if f := strings.Fields(string(b)); len(f) > 1 {
		pages, _ := strconv.ParseUint(f[1], 10, 64)
		rss = pages * uint64(os.Getpagesize())
	}
	return m.HeapInuse, rss, runtime.NumGoroutine()
}

// Every hostile case of the issue, each in a component: each fails its own activity
// with a clear failure (not retried when retrying cannot help), another project's
// workflows keep completing meanwhile, and afterwards the service is whole: the same
// workers, its memory and goroutines back where they were. Not parallel: it measures
// the process.
func TestHostileComponentsLeaveTheServiceWhole(t *testing.T) {
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	svc := startService(t, db, func(c *reconciler.Config) {
		c.ComponentTimeout = 8 * time.Second // wall-clock: long enough for the memory cases on a loaded machine
		c.ComponentMemoryMB = 32
		c.ComponentSandboxes = 2
	})

	type hostileCase struct {
		name, code, workflow string
		typ, text            string // typ may list types separated by |
	}
	cases := []hostileCase{
		{"typed40", `function typed40() { return new Uint8Array(40e9).length }`, "once", "RangeError", "would allocate 40000000000 bytes"},
		{"typed3", `function typed3() { return new Uint8Array(3e9).fill(1).length }`, "once", "RangeError", "would allocate 3000000000 bytes"},
		{"join", `function join() { return new Array(2.5e8).join("abcdefgh").length }`, "once", "RangeError", "Array.prototype.join"},
		{"recursion", `function recursion() { return recursion() + 1 }`, "once", "RangeError", "call stack"},
		{"doubling", `function doubling() { let s = "x"; for (;;) s += s }`, "default", component.FailureMemory, "memory"},
		{"flood", `function flood() { const o = {}; for (let i = 0; ; i++) o["k" + i] = {i, s: "v" + i} }`, "default", component.FailureMemory, "memory"},
		{"spin", `function spin() { while (true) {} }`, "default", component.FailureTimeout, "ran longer than 8s"},
		// A native loop that also holds about 70 MiB: the kill for time or for memory comes first.
		{"bigpow", `function bigpow() { return typeof (10n ** 40000000n) }`, "default", component.FailureTimeout + "|" + component.FailureMemory, "was stopped"},
		{"bigshift", `function bigshift() { return typeof (1n << 40000000000n) }`, "default", component.FailureMemory, "out of memory"},
	}
	hostile, hq := project(t, db.Pool)
	for _, c := range cases {
		addComponent(t, db, hostile, c.name, c.code)
		def := callOnce(c.name)
		if c.workflow == "default" {
			def = callDefault(c.name)
		}
		workflow(t, db.Pool, hostile, "call_"+c.name, def)
	}
	addComponent(t, db, hostile, "fine", `function fine(x) { return x + 1 }`)
	workflow(t, db.Pool, hostile, "call_fine", callOnce("fine"))
	victim, vq := project(t, db.Pool)
	addComponent(t, db, victim, "fine", `function fine(x) { console.log("victim", x); return x * 10 }`)
	workflow(t, db.Pool, victim, "call_fine", callOnce("fine"))
	setDesired(t, db.Pool, hostile, "running")
	setDesired(t, db.Pool, victim, "running")
	before := waitWorker(t, db.Pool, hostile, 30*time.Second, hasStatus("running"))
	waitWorker(t, db.Pool, victim, 30*time.Second, hasStatus("running"))

	// Warm up both projects, then take the baseline.
	var out float64
	must(t, execute(t, tc, vq, "call_fine", 1, &out))
	must(t, execute(t, tc, hq, "call_fine", 1, &out))
	heap0, rss0, gor0 := serviceFootprint()

	// The victim runs workflows in a loop the whole time.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var victimRuns int
	var victimErrs []string
	var victimSlowest time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			began := time.Now()
			var got float64
			err := execute(t, tc, vq, "call_fine", i, &got)
			took := time.Since(began)
			mu.Lock()
			victimRuns++
			victimSlowest = max(victimSlowest, took)
			if err != nil || got != float64(10*i) {
				victimErrs = append(victimErrs, fmt.Sprintf("run %d: %v, %v", i, got, err))
			}
			mu.Unlock()
		}
	}()

	ctx := context.Background()
	for _, c := range cases {
		began := time.Now()
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: c.name + "-" + uuid.NewString(), TaskQueue: hq}, "call_"+c.name, nil)
		must(t, err)
		waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err = run.Get(waitCtx, nil)
		cancel()
		var app *temporal.ApplicationError
		for _, typ := range strings.Split(c.typ, "|") {
			if app == nil {
				app = failureOfType(err, typ)
			}
		}
		if app == nil {
			t.Errorf("%s: got %v, want a %s failure", c.name, err, c.typ)
			continue
		}
		if !strings.Contains(app.Error(), c.text) {
			t.Errorf("%s: message %q does not say %q", c.name, app.Error(), c.text)
		}
		if c.workflow == "default" {
			if !app.NonRetryable() {
				t.Errorf("%s: %s is retryable", c.name, c.typ)
			}
			if n := activityAttempts(t, tc, run.GetID()); n != 1 {
				t.Errorf("%s: %d attempts under the default retry policy, want 1", c.name, n)
			}
		}
		t.Logf("%-9s %-20s after %6s: %s", c.name, app.Type(), time.Since(began).Round(time.Millisecond), app.Error())
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	t.Logf("victim: %d runs meanwhile, slowest %s", victimRuns, victimSlowest.Round(time.Millisecond))
	if victimRuns < len(cases) || len(victimErrs) > 0 {
		t.Errorf("the victim project ran %d workflows meanwhile; failures: %q", victimRuns, victimErrs)
	}
	mu.Unlock()

	// The hostile project's worker is the one it had, and serves.
	if err := execute(t, tc, hq, "call_fine", 1, &out); err != nil || out != 2 {
		t.Fatalf("after the hostile calls, fine returned %v, %v", out, err)
	}
	if after, _ := latestWorker(t, db.Pool, hostile); after.WorkerID != before.WorkerID || after.Status != "running" {
		t.Fatalf("worker changed from %s to %s (%s)", before.WorkerID, after.WorkerID, after.Status)
	}

	// The service is back where it was: every sandbox replaced, memory and goroutines
	// at their baseline (within 16 MiB of heap, 64 MiB of RSS, 20 goroutines).
	const heapSlack, rssSlack, goroutineSlack = 16 << 20, 64 << 20, 20
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		s := svc.ComponentSandboxes()
		heap, rss, gor := serviceFootprint()
		why := fmt.Sprintf("sandboxes %+v; heap %d -> %d MiB, RSS %d -> %d MiB, goroutines %d -> %d",
			s, heap0>>20, heap>>20, rss0>>20, rss>>20, gor0, gor)
		ok := s.Live == 2 && s.Idle == 2 && heap <= heap0+heapSlack && rss <= rss0+rssSlack && gor <= gor0+goroutineSlack
		if ok {
			t.Log(why)
		}
		return ok, why
	})
	if s := svc.ComponentSandboxes(); s.KilledMemory+s.Died == 0 {
		t.Errorf("expected sandboxes killed for memory: %+v", s) // for time: TestSandboxHostileCode
	}
}

// activityAttempts is the attempt of the run's (single) activity when it last started.
func activityAttempts(t *testing.T, tc client.Client, workflowID string) int32 {
	t.Helper()
	it := tc.GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var attempt int32
	for it.HasNext() {
		e, err := it.Next()
		must(t, err)
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil {
			attempt = a.GetAttempt()
		}
	}
	return attempt
}
