package reconciler_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// The backlog metric of a project whose worker is saturated (one activity slot, the
// activity waits on a server) rises while its runs wait, and falls to zero when they
// drain; an idle project's stays at zero; a stopped project's label goes away.
func TestBacklogMetricFollowsASaturatedWorker(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	release := make(chan struct{})
	var once sync.Once
	blocked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "done")
	}))
	defer blocked.Close()
	defer once.Do(func() { close(release) })
	svc := startService(t, db, func(c *reconciler.Config) {
		c.OpsAddr = "127.0.0.1:0"
		c.BacklogSampleRate = 20
		c.BacklogSampleInterval = 200 * time.Millisecond
	})
	metrics := "http://" + svc.OpsAddr() + "/metrics"

	busy, queue := project(t, db.Pool)
	exec(t, db.Pool, `UPDATE projects SET worker_options = '{"max_concurrent_activities": 1}' WHERE id = $1`, busy)
	workflow(t, db.Pool, busy, "wait", `{"version": 1, "start": "h", "nodes": {
		"h": {"type": "activity", "activity": "http.request", "input": {"url": "`+blocked.URL+`", "timeout": "60s"}, "next": "r"},
		"r": {"type": "return", "value": "${nodes.h.output.body}"}}}`)
	idle, _ := project(t, db.Pool)
	workflow(t, db.Pool, idle, "greet", greetV1)
	setDesired(t, db.Pool, busy, "running")
	setDesired(t, db.Pool, idle, "running")
	waitWorker(t, db.Pool, busy, 30*time.Second, hasStatus("running"))
	waitWorker(t, db.Pool, idle, 30*time.Second, hasStatus("running"))

	backlog := func(id uuid.UUID) (count, age float64, present bool) {
		_, text := get(t, metrics)
		count, present = metricValue(t, text, "reconciler_task_queue_backlog", `project_id="`+id.String()+`"`)
		age, _ = metricValue(t, text, "reconciler_task_queue_backlog_age_seconds", `project_id="`+id.String()+`"`)
		return count, age, present
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		c, _, ok := backlog(busy)
		return ok && c == 0, fmt.Sprintf("busy project's backlog before any run: %v (present %v)", c, ok)
	})

	const runs = 6
	ctx := context.Background()
	var started []client.WorkflowRun
	for i := range runs {
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("wait-%d-%s", i, uuid.NewString()), TaskQueue: queue}, "wait", nil)
		if err != nil {
			t.Fatal(err)
		}
		started = append(started, run)
	}
	var peak, peakAge float64
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		c, a, _ := backlog(busy)
		peak, peakAge = max(peak, c), max(peakAge, a)
		return c >= runs-2 && a > 0, fmt.Sprintf("backlog %v, oldest %vs", c, a)
	})
	t.Logf("%d runs on one activity slot: backlog rose to %v, oldest task %.2fs", runs, peak, peakAge)
	if c, _, ok := backlog(idle); !ok || c != 0 {
		t.Errorf("idle project's backlog: %v (present %v), want 0", c, ok)
	}

	once.Do(func() { close(release) })
	began := time.Now()
	for _, run := range started {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var out string
		err := run.Get(wctx, &out)
		cancel()
		if err != nil || out != "done" {
			t.Fatalf("run %s: %q, %v", run.GetID(), out, err)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		c, a, _ := backlog(busy)
		return c == 0 && a == 0, fmt.Sprintf("backlog %v, oldest %vs after the runs drained", c, a)
	})
	t.Logf("drained: backlog back to 0 %s after the server answered", time.Since(began).Round(10*time.Millisecond))

	setDesired(t, db.Pool, idle, "stopped")
	waitWorker(t, db.Pool, idle, 30*time.Second, hasStatus("stopped"))
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		_, _, ok := backlog(idle)
		return !ok, "the stopped project still has a backlog series"
	})
}
