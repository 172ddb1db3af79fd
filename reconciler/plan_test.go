package reconciler

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestPlan(t *testing.T) {
	now := time.Now()
	running := desired{Exists: true, Running: true, Generation: 3, TaskQueue: "q"}
	stopped := desired{Exists: true, Running: false, Generation: 3, TaskQueue: "q"}
	serving := actual{Exists: true, Generation: 3, TaskQueue: "q", StartGeneration: 3}
	held := leaseView{Mine: true, Held: true, Term: 7}
	free := leaseView{Mine: true}
	elsewhere := leaseView{Mine: true, Elsewhere: now.Add(4 * time.Second)}
	notMine := leaseView{Mine: false}
	notMineHeld := leaseView{Mine: false, Held: true, Term: 7}
	draining := leaseView{Mine: false, Held: true, Term: 7, Draining: true}
	backoff := history{NextRetry: now.Add(3 * time.Second), Generation: 3}
	gen := func(d desired, g int64) desired { d.Generation = g; return d }

	cases := []struct {
		name string
		d    desired
		a    actual
		l    leaseView
		h    history
		want step
	}{
		// The database does not want it here.
		{"nothing wanted, nothing runs", stopped, actual{}, free, history{}, step{Action: actNone, Forget: true}},
		{"deleted project, nothing runs", desired{}, actual{}, free, history{}, step{Action: actNone, Forget: true}},
		{"not wanted, lease held, no worker: give it up", stopped, actual{}, held, history{}, step{Action: actRelease, Forget: true}},
		{"not wanted and held: stop and release", stopped, serving, held, history{}, step{Action: actStop, Reason: "desired_status is stopped", Forget: true}},
		{"deleted while running: stop, the lease went with it", desired{}, serving, held, history{}, step{Action: actStop, Reason: "project deleted", DropLease: true, Forget: true}},
		{"deleted, lease held, no worker", desired{}, actual{}, held, history{}, step{Action: actNone, DropLease: true, Forget: true}},
		{"not wanted, failed worker in backoff: forget the failures", stopped, actual{}, free, backoff, step{Action: actNone, Forget: true}},
		{"not wanted, held, the worker still stopping: wait for its end", stopped, actual{Stopping: true}, held, history{}, step{Action: actNone, Forget: true}},
		{"not wanted, held, stopped just now: release after the grace", stopped, actual{StoppedAt: now.Add(-30 * time.Millisecond)}, held, history{}, step{Action: actNone, Forget: true, RequeueAfter: handoffGrace - 30*time.Millisecond}},
		{"not wanted, held, stopped a while ago: release", stopped, actual{StoppedAt: now.Add(-time.Second)}, held, history{}, step{Action: actRelease, Forget: true}},
		{"wanted again while the old worker stops: start a new one", running, actual{Stopping: true}, held, history{}, step{Action: actStart}},

		// Wanted, but assigned to another replica, or this replica drains.
		{"assigned elsewhere, running here: stop and release", running, serving, notMineHeld, history{}, step{Action: actStop, Reason: "assigned to another replica"}},
		{"assigned elsewhere, nothing here", running, actual{}, notMine, history{}, step{Action: actNone}},
		{"assigned elsewhere, lease still held: release", running, actual{}, notMineHeld, history{}, step{Action: actRelease}},
		{"draining: stop and release", running, serving, draining, history{}, step{Action: actStop, Reason: "shutdown"}},

		// Wanted here, without the lease.
		{"wanted, lease free: acquire", running, actual{}, free, history{}, step{Action: actAcquire}},
		{"wanted, held elsewhere: look again when it runs out", running, actual{}, elsewhere, history{}, step{Action: actNone, RequeueAfter: 4*time.Second + leaseRetryMargin}},
		{"wanted, lease lost mid-run: stop without releasing, retry", running, serving, free, history{}, step{Action: actStop, Reason: "the lease is not held", RequeueAfter: lostLeaseRetry}},
		{"fenced (lease dropped, worker gone): acquire again", running, actual{}, free, history{}, step{Action: actAcquire}},

		// Wanted here, with the lease.
		{"wanted and held, nothing runs: start", running, actual{}, held, history{}, step{Action: actStart}},
		{"wanted and held, serving this generation", running, serving, held, history{}, step{Action: actNone}},
		{"new generation: reload", gen(running, 4), serving, held, history{}, step{Action: actReload}},
		{"task queue renamed: restart", desired{Exists: true, Running: true, Generation: 4, TaskQueue: "q2"}, serving, held, history{}, step{Action: actRestart}},
		{"worker options changed: restart", desired{Exists: true, Running: true, Generation: 4, TaskQueue: "q", Options: workerOptions{MaxConcurrentActivities: 5}}, serving, held, history{}, step{Action: actRestart}},
		{"restart requested", desired{Exists: true, Running: true, Generation: 4, TaskQueue: "q", RestartGeneration: 4}, serving, held, history{}, step{Action: actRestart}},
		{"restart already done", desired{Exists: true, Running: true, Generation: 5, TaskQueue: "q", RestartGeneration: 4}, actual{Exists: true, Generation: 4, StartGeneration: 4, TaskQueue: "q"}, held, history{}, step{Action: actReload}},
		{"polls failed through an outage that is over: replace the worker", running, actual{Exists: true, Generation: 3, TaskQueue: "q", StartGeneration: 3, Replace: true}, held, history{}, step{Action: actRestart}},
		{"crash with backoff pending: wait for it", running, actual{}, held, backoff, step{Action: actNone, RequeueAfter: 3 * time.Second}},
		{"crash, backoff over: start", running, actual{}, held, history{NextRetry: now.Add(-time.Second), Generation: 3}, step{Action: actStart}},
		{"crash with backoff pending, then a compile: start at once", gen(running, 4), actual{}, held, backoff, step{Action: actStart}},
	}
	for _, c := range cases {
		got := plan(observation{Desired: c.d, Actual: c.a, Lease: c.l, History: c.h, Now: now})
		if got != c.want {
			t.Errorf("%s:\n got  %+v\n want %+v", c.name, got, c.want)
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
		d, rec := f.Fail(id, 1, "boom", i%2 == 0, false)
		if rec.Consecutive != i+1 || d < want/2 || d > want {
			t.Errorf("failure %d: delay %s (consecutive %d), want within [%s, %s]", i+1, d, rec.Consecutive, want/2, want)
		}
	}
	if rec := f.Get(id); rec.Crashes != 3 || rec.LastError != "boom" || !rec.NextRetry.After(time.Now()) || rec.Generation != 1 {
		t.Errorf("record %+v", rec)
	}

	// Sustained health: no failure for resetAfter starts the backoff over.
	short := newFailures(time.Second, time.Minute, time.Nanosecond)
	short.Fail(id, 1, "a", false, false)
	short.Fail(id, 1, "b", false, false)
	if d, rec := short.Fail(id, 1, "c", false, false); rec.Consecutive != 1 || d > time.Second {
		t.Errorf("after sustained health: delay %s, consecutive %d; want a fresh start", d, rec.Consecutive)
	}
	f.Forget(id)
	if rec := f.Get(id); rec.Consecutive != 0 || !rec.NextRetry.IsZero() {
		t.Errorf("after Forget: %+v", rec)
	}
}
