package reconciler

import (
	"bytes"
	"encoding/json"
	"fmt"
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
}

// action is the one step a reconcile takes.
type action int

const (
	actNone    action = iota
	actStart          // no worker runs: start one
	actStop           // a worker runs but must not
	actReload         // swap what the running worker serves, without dropping its pollers
	actRestart        // replace the worker: new task queue or options, or a restart request
)

func (a action) String() string {
	return [...]string{"none", "start", "stop", "reload", "restart"}[a]
}

// plan is the pure heart of a reconcile: from desired and actual state, what to do.
func plan(d desired, a actual) action {
	if !d.Exists || !d.Running {
		if a.Exists {
			return actStop
		}
		return actNone
	}
	switch {
	case !a.Exists:
		return actStart
	case a.TaskQueue != d.TaskQueue, a.Options != d.Options, d.RestartGeneration > a.StartGeneration:
		return actRestart
	case a.Generation != d.Generation:
		return actReload
	}
	return actNone
}

// workerOptions is projects.worker_options. The database rejects unknown keys and
// out-of-range values (reconciler_check_worker_options); the same rules apply here.
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
