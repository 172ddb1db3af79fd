package reconciler_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// workflowTaskFailure is the message of the first failed workflow task of a run, if any.
func workflowTaskFailure(t *testing.T, tc client.Client, id string) string {
	t.Helper()
	it := tc.GetWorkflowHistory(context.Background(), id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if a := e.GetWorkflowTaskFailedEventAttributes(); a != nil {
			return a.GetFailure().GetMessage()
		}
	}
	return ""
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssMiB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(l)[1])
			return kb >> 10
		}
	}
	return 0
}

// Hostile workflow code: an endless loop, a memory bomb, deep recursion, require,
// process.exit and fetch each fail clearly (the limits fail the workflow task, which
// Temporal retries; the rest fail the run or the compile), while a second workflow of
// the same project and another project's keep running, and no CPU keeps burning.
// Not parallel: it measures the process's CPU time.
func TestHostileWorkflowCodeFailsAlone(t *testing.T) {
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db, func(c *reconciler.Config) {
		c.WorkflowCodeTimeout = 200 * time.Millisecond
		c.WorkflowCodeMemoryMB = 16
	})

	a, queueA := project(t, db.Pool)
	b, queueB := project(t, db.Pool)
	hostile := map[string]string{
		"loop":    `export default async function loop() { while (true) {} }`,
		"alloc":   `export default async function alloc() { const a: Uint8Array[] = []; for (;;) a.push(new Uint8Array(1 << 20)); }`,
		"sparse":  `export default async function sparse() { return new Array(2.5e8).join('x').length }`,
		"recurse": `export default async function recurse() { const f = (n: number): number => f(n + 1) + 1; return f(0); }`,
		"exit":    `declare const process: any; export default async function exit() { process.exit(1) }`,
		"fetch":   `declare const fetch: any; export default async function fetch_() { return await fetch('http://169.254.169.254/') }`,
		"require": `declare const require: any; const fs = require('fs'); export default async function req() { return fs }`,
	}
	for name, code := range hostile {
		moduleWorkflow(t, db.Pool, a, name, "typescript", code)
	}
	good := `import { sleep } from '@temporalio/workflow';
export default async function good(n: number) { for (let i = 0; i < n; i++) await sleep(20); return 'done ' + n }`
	moduleWorkflow(t, db.Pool, a, "good", "typescript", good)
	moduleWorkflow(t, db.Pool, b, "good", "typescript", good)
	setDesired(t, db.Pool, a, "running")
	setDesired(t, db.Pool, b, "running")
	row := waitWorker(t, db.Pool, a, 30*time.Second, hasStatus("running"))
	waitWorker(t, db.Pool, b, 30*time.Second, hasStatus("running"))
	errs, _ := row.Metadata["workflow_errors"].(map[string]any)
	if !strings.Contains(fmt.Sprint(errs["require"]), `import "fs" is not allowed`) || len(errs) != 1 {
		t.Errorf("workflow_errors %v, want require's import refused", errs)
	}
	rss0 := rssMiB()

	runs := map[string]client.WorkflowRun{}
	for _, name := range []string{"loop", "alloc", "sparse", "recurse", "exit", "fetch"} {
		runs[name] = start(t, tc, queueA, name)
	}
	// Beside them, the same project's and another project's runs complete.
	for _, q := range []string{queueA, queueB} {
		if got, err := result(t, start(t, tc, q, "good", 5)); err != nil || got != `"done 5"` {
			t.Fatalf("good run on %s: %s, %v", q, got, err)
		}
	}

	// The limits fail the workflow task, with a message saying which.
	for name, want := range map[string]string{"loop": "WorkflowCodeTimeout", "alloc": "WorkflowCodeMemoryLimit"} {
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			msg := workflowTaskFailure(t, tc, runs[name].GetID())
			return strings.Contains(msg, want), fmt.Sprintf("%s: workflow task failure %q", name, msg)
		})
	}
	// The others fail their run, typed.
	for name, want := range map[string]string{"sparse": "RangeError", "recurse": "", "exit": "ReferenceError", "fetch": "ReferenceError"} {
		_, err := result(t, runs[name])
		if err == nil || (want != "" && failureOfType(err, want) == nil) {
			t.Errorf("%s: %v, want a failure of type %q", name, err, want)
		}
		t.Logf("%s: %v", name, err)
	}
	for _, name := range []string{"loop", "alloc"} {
		if err := tc.TerminateWorkflow(context.Background(), runs[name].GetID(), "", "test over"); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing keeps running: within a few one-second windows the process is idle
	// again (the last interrupted task is bounded by the 200ms limit).
	c0, w0 := cpuTime(), time.Now()
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		if time.Since(w0) < time.Second {
			return false, "measuring"
		}
		used := cpuTime() - c0
		ok := used < time.Duration(float64(time.Since(w0))*0.3)
		c0, w0 = cpuTime(), time.Now()
		return ok, fmt.Sprintf("CPU %s in a second", used)
	})
	if got, err := result(t, start(t, tc, queueA, "good", 1)); err != nil || got != `"done 1"` {
		t.Fatalf("good run after the hostile ones: %s, %v", got, err)
	}
	t.Logf("RSS %d MiB before the hostile runs, %d MiB after", rss0, rssMiB())
	if grew := rssMiB() - rss0; grew > 256 {
		t.Errorf("RSS grew by %d MiB", grew)
	}
}
