package reconciler

import "fmt"

// workerLimits are the operator's bounds on what a project's worker_options may ask.
// worker_options is written by the project's owner, a tenant: left alone, one project
// asking for 10,000 pollers takes the namespace's whole poll allowance on the Temporal
// frontend (frontend.namespaceCount) and every other project's polls fail with
// ResourceExhausted.
type workerLimits struct {
	// MaxPollers caps each poller count (workflow task, activity task) of one project.
	MaxPollers int
	// MaxSlots caps each max_concurrent_* of one project.
	MaxSlots int
	// PollerBudget is how many polls of each type this replica's workers may hold in
	// all. Every worker gets at least the defaults whatever the budget says; pollers a
	// project asks for beyond them are granted only while the total stays within it.
	PollerBudget int
	// Default pollers per worker, when worker_options names none.
	WorkflowPollers, ActivityPollers int
}

// effectiveOptions is what a worker is built with: its project's worker_options within
// the limits. Clamped says, per option, what was asked and why less was given.
type effectiveOptions struct {
	WorkflowPollers    int
	ActivityPollers    int
	MaxActivities      int // 0: the SDK's default
	MaxWorkflowTasks   int
	MaxLocalActivities int
	Clamped            map[string]string
}

// pollers is the number of polls of each type a worker holds.
func (e effectiveOptions) pollers() (workflow, activity int) {
	return e.WorkflowPollers, e.ActivityPollers
}

// apply clamps o to the limits, with usedWorkflow and usedActivity polls already held
// by the replica's other workers.
func (l workerLimits) apply(o workerOptions, usedWorkflow, usedActivity int) effectiveOptions {
	e := effectiveOptions{Clamped: map[string]string{}}
	slots := func(name string, asked int) int {
		if asked > l.MaxSlots {
			e.Clamped[name] = fmt.Sprintf("asked %d, got %d: the most a project may have (RECONCILER_MAX_TASK_SLOTS_PER_PROJECT)", asked, l.MaxSlots)
			return l.MaxSlots
		}
		return asked
	}
	e.MaxActivities = slots("max_concurrent_activities", o.MaxConcurrentActivities)
	e.MaxWorkflowTasks = slots("max_concurrent_workflow_tasks", o.MaxConcurrentWorkflowTasks)
	e.MaxLocalActivities = slots("max_concurrent_local_activities", o.MaxConcurrentLocalActivities)

	pollers := func(name string, asked, def, used int) int {
		if asked == 0 {
			return def
		}
		got := asked
		if got > l.MaxPollers {
			got = l.MaxPollers
			e.Clamped[name] = fmt.Sprintf("asked %d, got %d: the most a project may have (RECONCILER_MAX_POLLERS_PER_PROJECT)", asked, got)
		}
		if extra := got - def; extra > 0 {
			left := max(l.PollerBudget-used-def, 0)
			if extra > left {
				got = def + left
				e.Clamped[name] = fmt.Sprintf("asked %d, got %d: this replica's workers hold %d polls of this type and its budget is %d (RECONCILER_POLLER_BUDGET)", asked, got, used, l.PollerBudget)
			}
		}
		return got
	}
	e.WorkflowPollers = pollers("workflow_task_pollers", o.WorkflowTaskPollers, l.WorkflowPollers, usedWorkflow)
	e.ActivityPollers = pollers("activity_task_pollers", o.ActivityTaskPollers, l.ActivityPollers, usedActivity)
	if len(e.Clamped) == 0 {
		e.Clamped = nil
	}
	return e
}
