package reconciler

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestPlan(t *testing.T) {
	running := desired{Exists: true, Running: true, Generation: 3, TaskQueue: "q"}
	stopped := desired{Exists: true, Running: false, Generation: 3, TaskQueue: "q"}
	serving := actual{Exists: true, Generation: 3, TaskQueue: "q"}
	cases := []struct {
		name string
		d    desired
		a    actual
		want action
	}{
		{"nothing wanted, nothing runs", stopped, actual{}, actNone},
		{"deleted project, nothing runs", desired{}, actual{}, actNone},
		{"wanted, not running", running, actual{}, actStart},
		{"wanted and serving this generation", running, serving, actNone},
		{"not wanted any more", stopped, serving, actStop},
		{"deleted while running", desired{}, serving, actStop},
		{"new generation", desired{Exists: true, Running: true, Generation: 4, TaskQueue: "q"}, serving, actReload},
		{"task queue renamed", desired{Exists: true, Running: true, Generation: 4, TaskQueue: "q2"}, serving, actRestart},
		{"worker options changed", desired{Exists: true, Running: true, Generation: 4, TaskQueue: "q", Options: workerOptions{MaxConcurrentActivities: 5}}, serving, actRestart},
		{"restart requested", desired{Exists: true, Running: true, Generation: 4, TaskQueue: "q", RestartGeneration: 4}, actual{Exists: true, Generation: 3, StartGeneration: 3, TaskQueue: "q"}, actRestart},
		{"restart already done", desired{Exists: true, Running: true, Generation: 5, TaskQueue: "q", RestartGeneration: 4}, actual{Exists: true, Generation: 4, StartGeneration: 4, TaskQueue: "q"}, actReload},
	}
	for _, c := range cases {
		if got := plan(c.d, c.a); got != c.want {
			t.Errorf("%s: plan = %s, want %s", c.name, got, c.want)
		}
	}
}

func TestParseWorkerOptions(t *testing.T) {
	o, err := parseWorkerOptions([]byte(`{"max_concurrent_activities": 50, "workflow_task_pollers": 3}`))
	if err != nil || o.MaxConcurrentActivities != 50 || o.WorkflowTaskPollers != 3 {
		t.Fatalf("got %+v, %v", o, err)
	}
	for _, bad := range []string{`{"max_activities": 1}`, `{"max_concurrent_activities": "5"}`, `{"max_concurrent_activities": 1.5}`, `[1]`, `{"workflow_task_pollers": 1}`} {
		if _, err := parseWorkerOptions([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestQueueDeduplicatesAndNeverHandsOutAProjectTwice(t *testing.T) {
	q := newQueue()
	a, b := uuid.New(), uuid.New()
	q.Add(a)
	q.Add(a)
	q.Add(b)
	if q.Len() != 2 {
		t.Fatalf("len %d after adding a twice and b, want 2", q.Len())
	}
	got, _ := q.Get()
	if got != a {
		t.Fatalf("first out %s, want a (FIFO)", got)
	}
	q.Add(a) // dirty again while being processed: must wait for Done
	if next, _ := q.Get(); next != b {
		t.Fatalf("second out %s, want b (a is being processed)", next)
	}
	if q.Len() != 1 {
		t.Fatalf("len %d, want a pending", q.Len())
	}
	q.Done(a)
	if next, _ := q.Get(); next != a {
		t.Fatalf("after Done, got %s, want a again", next)
	}
	q.Done(a)
	q.Done(b)
	q.ShutDown()
	if _, ok := q.Get(); ok {
		t.Fatal("Get after ShutDown handed out work")
	}
}

func TestQueueAddAfter(t *testing.T) {
	q := newQueue()
	a := uuid.New()
	q.AddAfter(a, 20*time.Millisecond)
	if at, ok := q.Pending(a); !ok || time.Until(at) <= 0 {
		t.Fatalf("pending = %v, %v; want a retry in the future", at, ok)
	}
	began := time.Now()
	got, ok := q.Get()
	if !ok || got != a || time.Since(began) < 15*time.Millisecond {
		t.Fatalf("got %s after %s", got, time.Since(began))
	}
	q.Done(a)
	q.ShutDown()
}

func TestFailuresBackOffWithJitterCapAndReset(t *testing.T) {
	f := newFailures(time.Second, 8*time.Second, time.Hour)
	id := uuid.New()
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		d, rec := f.Fail(id, "boom", i%2 == 0, false)
		if rec.Consecutive != i+1 || d < want/2 || d > want {
			t.Errorf("failure %d: delay %s (consecutive %d), want within [%s, %s]", i+1, d, rec.Consecutive, want/2, want)
		}
	}
	if rec := f.Get(id); rec.Crashes != 3 || rec.LastError != "boom" || !f.Waiting(id) {
		t.Errorf("record %+v, waiting %v", rec, f.Waiting(id))
	}

	// Sustained health: no failure for resetAfter starts the backoff over.
	short := newFailures(time.Second, time.Minute, time.Nanosecond)
	short.Fail(id, "a", false, false)
	short.Fail(id, "b", false, false)
	if d, rec := short.Fail(id, "c", false, false); rec.Consecutive != 1 || d > time.Second {
		t.Errorf("after sustained health: delay %s, consecutive %d; want a fresh start", d, rec.Consecutive)
	}
	f.Forget(id)
	if rec := f.Get(id); rec.Consecutive != 0 || f.Waiting(id) {
		t.Errorf("after Forget: %+v", rec)
	}
}
