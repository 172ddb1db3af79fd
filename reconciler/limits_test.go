package reconciler

import (
	"strings"
	"testing"
)

func TestWorkerLimits(t *testing.T) {
	l := workerLimits{MaxPollers: 8, MaxSlots: 100, PollerBudget: 20, WorkflowPollers: 2, ActivityPollers: 1}
	cases := []struct {
		name            string
		opts            workerOptions
		usedWf, usedAct int
		wantWf, wantAct int
		wantActivities  int
		clamped         []string // options named in Clamped, with a word of the reason
	}{
		{"defaults", workerOptions{}, 0, 0, 2, 1, 0, nil},
		{"within the limits", workerOptions{WorkflowTaskPollers: 4, ActivityTaskPollers: 3, MaxConcurrentActivities: 50}, 0, 0, 4, 3, 50, nil},
		{"fewer than the defaults", workerOptions{WorkflowTaskPollers: 2, ActivityTaskPollers: 1}, 0, 0, 2, 1, 0, nil},
		{"a hog is clamped to the per-project cap", workerOptions{WorkflowTaskPollers: 10000, ActivityTaskPollers: 10000, MaxConcurrentActivities: 10000}, 0, 0, 8, 8, 100,
			[]string{"workflow_task_pollers:RECONCILER_MAX_POLLERS_PER_PROJECT", "activity_task_pollers:RECONCILER_MAX_POLLERS_PER_PROJECT", "max_concurrent_activities:RECONCILER_MAX_TASK_SLOTS_PER_PROJECT"}},
		{"extras only within the budget", workerOptions{WorkflowTaskPollers: 8}, 15, 0, 5, 1, 0, []string{"workflow_task_pollers:RECONCILER_POLLER_BUDGET"}},
		{"the defaults whatever the budget", workerOptions{WorkflowTaskPollers: 8, ActivityTaskPollers: 8}, 40, 40, 2, 1, 0,
			[]string{"workflow_task_pollers:RECONCILER_POLLER_BUDGET", "activity_task_pollers:RECONCILER_POLLER_BUDGET"}},
	}
	for _, c := range cases {
		e := l.apply(c.opts, c.usedWf, c.usedAct)
		if e.WorkflowPollers != c.wantWf || e.ActivityPollers != c.wantAct || e.MaxActivities != c.wantActivities {
			t.Errorf("%s: pollers %d/%d, activities %d; want %d/%d, %d", c.name, e.WorkflowPollers, e.ActivityPollers, e.MaxActivities, c.wantWf, c.wantAct, c.wantActivities)
		}
		if len(e.Clamped) != len(c.clamped) {
			t.Errorf("%s: clamped %v, want %v", c.name, e.Clamped, c.clamped)
		}
		for _, want := range c.clamped {
			name, why, _ := strings.Cut(want, ":")
			if !strings.Contains(e.Clamped[name], why) {
				t.Errorf("%s: %s clamped with %q, want it to name %s", c.name, name, e.Clamped[name], why)
			}
		}
	}
}
