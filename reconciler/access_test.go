package reconciler_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// The service connected as a member of reconciler_service (the least-privilege role of
// the README) runs a project end to end, and can do nothing the builder app owns: on
// plain PostgreSQL and on a database laid out like Supabase's.
func TestServiceRunsAsTheLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	for _, layout := range testenv.Layouts {
		t.Run(layout.Name, func(t *testing.T) {
			t.Parallel()
			testServiceAsLeastPrivilegeRole(t, layout.Database(t))
		})
	}
}

func testServiceAsLeastPrivilegeRole(t *testing.T, db *testenv.DB) {
	tc := testenv.TemporalClient(t)
	login := "svc_" + db.Name
	exec(t, db.Pool, `CREATE ROLE `+login+` LOGIN IN ROLE reconciler_service`)
	t.Cleanup(func() { _, _ = db.Pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+login) })

	svcURL := db.URLAs(login)
	startService(t, db, func(c *reconciler.Config) { c.DatabaseURL = svcURL })

	id, queue := project(t, db.Pool)
	wf := workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	first := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	var out string
	if err := execute(t, tc, queue, "greet", map[string]any{"name": "least"}, &out); err != nil || out != "Hello, least!" {
		t.Fatalf("greet: %q, %v", out, err)
	}
	compileAndWaitServed(t, db, id, wf, greetV2)
	if err := execute(t, tc, queue, "greet", map[string]any{"name": "least"}, &out); err != nil || out != "Goodbye, least!" {
		t.Fatalf("after compile: %q, %v", out, err)
	}
	waitWorker(t, db.Pool, id, 10*time.Second, func(r workerRow) bool {
		return r.WorkerID == first.WorkerID && r.LastHeartbeat != nil && r.LastHeartbeat.After(time.Now().Add(-3*time.Second))
	})
	setDesired(t, db.Pool, id, "stopped")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("stopped"))

	svc, err := pgxpool.New(context.Background(), svcURL)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for _, stmt := range []string{
		`UPDATE projects SET desired_status = 'running'`,
		`INSERT INTO compiled_workflows (workflow_id, workflow_code) SELECT id, '{}' FROM workflows`,
		`DELETE FROM components`,
	} {
		if _, err := svc.Exec(context.Background(), stmt); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("as the service role, %s: %v; want permission denied", stmt, err)
		}
	}
}

// restart_project_worker replaces the worker (a new worker id), where a compile only
// reloads it.
func TestRestartRPCReplacesTheWorker(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	first := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	var desired string
	var gen int64
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT desired_status, generation_desired FROM restart_project_worker($1)`, id).Scan(&desired, &gen); err != nil {
		t.Fatal(err)
	}
	second := waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool {
		return r.Status == "running" && r.WorkerID != first.WorkerID && r.Generation == gen
	})
	// The new worker polls before the old one stops; then the old one is stopped.
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		var oldStatus string
		if err := db.Pool.QueryRow(context.Background(), `SELECT status FROM workflow_workers WHERE worker_id = $1`, first.WorkerID).Scan(&oldStatus); err != nil {
			return false, err.Error()
		}
		return oldStatus == "stopped", "the replaced worker is " + oldStatus
	})
	var out string
	if err := execute(t, tc, queue, "greet", map[string]any{"name": "again"}, &out); err != nil || out != "Hello, again!" {
		t.Fatalf("after restart (worker %s): %q, %v", second.WorkerID, out, err)
	}
}
