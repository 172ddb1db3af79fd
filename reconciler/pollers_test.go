package reconciler_test

import (
	"context"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// A project asking for 10,000 pollers of each type gets the per-project cap, says so
// in its row, and the other project of a namespace whose frontend allows few polls
// keeps running its workflows.
func TestPollerHogIsClampedAndOthersKeepPolling(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	srv := testenv.PrivateTemporal(t, "frontend.namespaceCount=16")
	tc := testenv.TemporalClientOf(t, srv.Address())
	startService(t, db, func(c *reconciler.Config) {
		c.TemporalAddress = srv.Address()
		c.MaxPollersPerProject = 4
	})

	hog, _ := project(t, db.Pool)
	workflow(t, db.Pool, hog, "greet", greetV1)
	exec(t, db.Pool, `UPDATE projects SET worker_options = '{"workflow_task_pollers": 10000, "activity_task_pollers": 10000, "max_concurrent_activities": 10000}' WHERE id = $1`, hog)
	setDesired(t, db.Pool, hog, "running")
	row := waitWorker(t, db.Pool, hog, 30*time.Second, hasStatus("running"))
	clamped, _ := row.Metadata["worker_options_clamped"].(map[string]any)
	for _, opt := range []string{"workflow_task_pollers", "activity_task_pollers", "max_concurrent_activities"} {
		if clamped[opt] == nil {
			t.Errorf("the row does not say %s was clamped: %v", opt, row.Metadata)
		}
	}

	victim, queue := project(t, db.Pool)
	workflow(t, db.Pool, victim, "greet", greetV1)
	setDesired(t, db.Pool, victim, "running")
	waitWorker(t, db.Pool, victim, 30*time.Second, hasStatus("running"))
	for range 5 {
		var out string
		if err := execute(t, tc, queue, "greet", map[string]any{"name": "victim"}, &out); err != nil || out != "Hello, victim!" {
			t.Fatalf("the victim's workflow beside the hog: %q, %v", out, err)
		}
	}
}

// A worker some of whose polls Temporal refuses (its namespace's poll limit) is not
// shown as healthy, although other polls get through.
func TestRefusedPollsAreNotHealthy(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	srv := testenv.PrivateTemporal(t, "frontend.namespaceCount=3")
	startService(t, db, func(c *reconciler.Config) { c.TemporalAddress = srv.Address() })

	id, _ := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	exec(t, db.Pool, `UPDATE projects SET worker_options = '{"workflow_task_pollers": 6, "activity_task_pollers": 6}' WHERE id = $1`, id)
	setDesired(t, db.Pool, id, "running")
	row := waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool {
		return r.Status == "running" && r.Metadata["poll_error"] != nil
	})
	t.Logf("poll_error: %v", row.Metadata["poll_error"])
	var healthy bool
	if err := db.Pool.QueryRow(context.Background(), `SELECT is_healthy FROM project_worker_health WHERE project_id = $1`, id).Scan(&healthy); err != nil || healthy {
		t.Fatalf("is_healthy = %v (%v) while polls are refused", healthy, err)
	}
}
