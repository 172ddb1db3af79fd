package reconciler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// desired is what the database says about a project.
type desired struct {
	Exists     bool
	Running    bool
	Generation int64
	TaskQueue  string
	Options    workerOptions
	// RestartGeneration is the generation of the last restart request: a worker
	// started before it must be replaced.
	RestartGeneration int64
}

// actual is what this process runs for a project.
type actual struct {
	Exists     bool
	Generation int64
	TaskQueue  string
	Options    workerOptions
	// StartGeneration is the generation the worker was started at (reloads keep it).
	StartGeneration int64
	// Replace: the worker's polls failed through a Temporal outage that is over, and the
	// SDK would take seconds more to poll again: a new worker polls at once.
	Replace bool
	// Stopping: an earlier worker of the project is still stopping (its in-flight
	// activities drain); StoppedAt: when the last one finished stopping.
	Stopping  bool
	StoppedAt time.Time
}

// leaseView is what this replica knows of a project's lease.
type leaseView struct {
	Mine      bool      // the assignment gives the project to this replica
	Held      bool      // this replica holds the lease
	Term      int64     // its term, when held
	Elsewhere time.Time // another replica holds it until then (zero: unknown or free)
	Draining  bool      // this replica is shutting down
}

// history is the project's recent failures in this process.
type history struct {
	NextRetry  time.Time // when the backoff of the last failure ends
	Generation int64     // the project's generation when it last failed
}

// observation is everything a reconcile decides from.
type observation struct {
	Desired desired
	Actual  actual
	Lease   leaseView
	History history
	Now     time.Time
}

// action is the one step a reconcile takes.
type action int

const (
	actNone    action = iota
	actAcquire        // take the project's lease, then plan again
	actStart          // no worker runs: start one
	actStop           // a worker runs but must not
	actReload         // swap what the running worker serves, without dropping its pollers
	actRestart        // replace the worker: new task queue or options, or a restart request
	actRelease        // no worker runs here and none should: give the lease up
)

func (a action) String() string {
	return [...]string{"none", "acquire", "start", "stop", "reload", "restart", "release"}[a]
}

// step is the whole decision of a reconcile: the action, and what goes with it.
type step struct {
	Action action
	// Reason says why a worker stops (its row and log say it). The worker stops in the
	// background; when it has, the project is looked at again, and the lease released
	// (actRelease) handoffGrace later if it is still not to run here.
	Reason string
	// Forget drops the project's failure history: it was stopped on purpose.
	Forget bool
	// DropLease forgets a lease whose project is gone.
	DropLease bool
	// RequeueAfter asks for another look after that long (0: only when triggered).
	RequeueAfter time.Duration
}

// leaseRetryMargin is how long after another replica's lease runs out a project held
// there is looked at again (its release would notify sooner).
const leaseRetryMargin = 50 * time.Millisecond

// lostLeaseRetry is how soon a project whose lease was lost under a running worker is
// looked at again, to acquire it anew.
const lostLeaseRetry = time.Second

// plan is the pure heart of a reconcile: from what the database wants, what this
// process runs, the lease and the project's failure history, the one step to take.
func plan(o observation) step {
	d, a, l := o.Desired, o.Actual, o.Lease
	wanted := d.Exists && d.Running

	// Not to run here: stop what runs, give the lease up.
	if !wanted || !l.Mine || l.Draining {
		var reason string
		switch {
		case !d.Exists:
			reason = "project deleted"
		case !d.Running:
			reason = "desired_status is stopped"
		case l.Draining:
			reason = "shutdown"
		default:
			reason = "assigned to another replica"
		}
		switch {
		case a.Exists:
			return step{Action: actStop, Reason: reason, DropLease: !d.Exists, Forget: !wanted}
		case !d.Exists && l.Held:
			return step{Action: actNone, DropLease: true, Forget: true} // the lease went with its project
		case l.Held && a.Stopping:
			return step{Action: actNone, Forget: !wanted} // the stop's end looks again
		case l.Held && o.Now.Before(a.StoppedAt.Add(handoffGrace)):
			// The SDK's Stop returns without waiting for the poll requests it cancelled:
			// let those reach Temporal before a successor may poll.
			return step{Action: actNone, Forget: !wanted, RequeueAfter: a.StoppedAt.Add(handoffGrace).Sub(o.Now)}
		case l.Held:
			return step{Action: actRelease, Forget: !wanted}
		}
		return step{Action: actNone, Forget: !wanted}
	}

	// To run here, but without the lease.
	if !l.Held {
		switch {
		case a.Exists:
			// The lease was lost under a running worker (taken over, or not renewed in
			// time): stop it, without releasing what is not ours, and try again.
			return step{Action: actStop, Reason: "the lease is not held", RequeueAfter: lostLeaseRetry}
		case !l.Elsewhere.IsZero():
			return step{Action: actNone, RequeueAfter: max(l.Elsewhere.Sub(o.Now), 0) + leaseRetryMargin}
		}
		return step{Action: actAcquire}
	}

	// To run here, with the lease.
	switch {
	case !a.Exists:
		// After a failure, the same generation waits out its backoff; a new one (a
		// compile, a restart request, new options) is tried at once.
		if o.History.NextRetry.After(o.Now) && d.Generation <= o.History.Generation {
			return step{Action: actNone, RequeueAfter: o.History.NextRetry.Sub(o.Now)}
		}
		return step{Action: actStart}
	case a.TaskQueue != d.TaskQueue, a.Options != d.Options, d.RestartGeneration > a.StartGeneration, a.Replace:
		return step{Action: actRestart}
	case a.Generation != d.Generation:
		return step{Action: actReload}
	}
	return step{Action: actNone}
}

// workerOptions is projects.worker_options. The database rejects unknown keys and
// out-of-range values (reconciler_private.check_worker_options); the same rules apply
// here.
type workerOptions struct {
	MaxConcurrentActivities      int `json:"max_concurrent_activities,omitempty"`
	MaxConcurrentWorkflowTasks   int `json:"max_concurrent_workflow_tasks,omitempty"`
	MaxConcurrentLocalActivities int `json:"max_concurrent_local_activities,omitempty"`
	WorkflowTaskPollers          int `json:"workflow_task_pollers,omitempty"`
	ActivityTaskPollers          int `json:"activity_task_pollers,omitempty"`
}

func parseWorkerOptions(raw []byte) (workerOptions, error) {
	var o workerOptions
	if len(bytes.TrimSpace(raw)) == 0 {
		return o, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return workerOptions{}, fmt.Errorf("projects.worker_options: %w", err)
	}
	for _, f := range []struct {
		name     string
		v, least int
	}{
		{"max_concurrent_activities", o.MaxConcurrentActivities, 1},
		{"max_concurrent_workflow_tasks", o.MaxConcurrentWorkflowTasks, 2},
		{"max_concurrent_local_activities", o.MaxConcurrentLocalActivities, 1},
		{"workflow_task_pollers", o.WorkflowTaskPollers, 2},
		{"activity_task_pollers", o.ActivityTaskPollers, 1},
	} {
		if f.v != 0 && (f.v < f.least || f.v > 10000) {
			return workerOptions{}, fmt.Errorf("projects.worker_options.%s must be between %d and 10000, got %d", f.name, f.least, f.v)
		}
	}
	return o, nil
}
