package db_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowbuilder/reconciler/internal/fixture"
	"github.com/flowbuilder/reconciler/internal/testenv"
)

const code = `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "value": 1}}}`

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func execErr(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) string {
	t.Helper()
	_, err := pool.Exec(context.Background(), sql, args...)
	if err == nil {
		t.Fatalf("%s: accepted, want an error", sql)
	}
	return err.Error()
}

func newProject(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	p, err := fixture.NewProject(context.Background(), pool, "p")
	if err != nil {
		t.Fatal(err)
	}
	return p.ID.String()
}

func gen(t *testing.T, pool *pgxpool.Pool, project string) int64 {
	t.Helper()
	g, err := fixture.Generation(context.Background(), pool, uuid.MustParse(project))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestTriggersBumpGenerationWhenTheWorkerMustReload(t *testing.T) {
	t.Parallel()
	d := testenv.Database(t)
	p := d.Pool
	project := newProject(t, p)

	var wf string
	if err := p.QueryRow(context.Background(),
		`INSERT INTO workflows (project_id, name) VALUES ($1, 'w') RETURNING id::text`, project).Scan(&wf); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		what string
		sql  string
		args []any
		bump bool
	}{
		{"draft workflow inserted", `SELECT 1`, nil, false},
		{"compile", `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, $2)`, []any{wf, code}, true},
		{"workflow activated", `UPDATE workflows SET status = 'active' WHERE id = $1`, []any{wf}, true},
		{"workflow definition edited", `UPDATE workflows SET definition = '{"x": 1}' WHERE id = $1`, []any{wf}, false},
		{"active workflow renamed", `UPDATE workflows SET name = 'w2' WHERE id = $1`, []any{wf}, true},
		{"component added", `INSERT INTO components (project_id, name, implementation_language, implementation_code) VALUES ($1, 'add', 'javascript', 'function add(x) { return x }')`, []any{project}, true},
		{"component changed", `UPDATE components SET implementation_code = 'function add(x) { return 1 }' WHERE project_id = $1`, []any{project}, true},
		{"component touched without change", `UPDATE components SET implementation_code = implementation_code WHERE project_id = $1`, []any{project}, false},
		{"component deactivated", `UPDATE components SET is_active = false WHERE project_id = $1`, []any{project}, true},
		{"inactive component deleted", `DELETE FROM components WHERE project_id = $1`, []any{project}, false},
		{"worker_options changed", `UPDATE projects SET worker_options = '{"max_concurrent_activities": 5}' WHERE id = $1`, []any{project}, true},
		{"desired_status changed", `UPDATE projects SET desired_status = 'running' WHERE id = $1`, []any{project}, false},
		{"project renamed", `UPDATE projects SET name = 'other' WHERE id = $1`, []any{project}, false},
		{"active workflow archived", `UPDATE workflows SET status = 'archived' WHERE id = $1`, []any{wf}, true},
	}
	for _, s := range steps {
		before := gen(t, p, project)
		mustExec(t, p, s.sql, s.args...)
		after := gen(t, p, project)
		switch {
		case s.bump && after != before+1:
			t.Errorf("%s: generation %d -> %d, want +1", s.what, before, after)
		case !s.bump && after != before:
			t.Errorf("%s: generation %d -> %d, want unchanged", s.what, before, after)
		}
	}
}

// listen returns a connection listening on reconciler_projects and a function that
// returns the payloads received up to a sentinel notification, which proves that
// nothing else was sent before it without waiting on a timer.
func listen(t *testing.T, d *testenv.DB) func() []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN reconciler_projects"); err != nil {
		t.Fatal(err)
	}
	return func() []string {
		t.Helper()
		mustExec(t, d.Pool, `SELECT pg_notify('reconciler_projects', 'sentinel')`)
		var got []string
		for {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := conn.WaitForNotification(wctx)
			cancel()
			if err != nil {
				t.Fatalf("waiting for notifications: %v (got %v)", err, got)
			}
			if n.Payload == "sentinel" {
				return got
			}
			got = append(got, n.Payload)
		}
	}
}

func TestNotifyOnDesiredStateGenerationAndDeleteOnly(t *testing.T) {
	t.Parallel()
	d := testenv.Database(t)
	p := d.Pool
	received := listen(t, d)
	project := newProject(t, p)
	if got := received(); len(got) != 1 || got[0] != project {
		t.Fatalf("insert of a project: notifications %v, want [%s]", got, project)
	}

	mustExec(t, p, `UPDATE projects SET desired_status = 'running' WHERE id = $1`, project)
	if got := received(); len(got) != 1 || got[0] != project {
		t.Fatalf("desired_status change: notifications %v, want [%s]", got, project)
	}

	mustExec(t, p, `UPDATE projects SET name = 'renamed' WHERE id = $1`, project)
	if got := received(); len(got) != 0 {
		t.Fatalf("rename: notifications %v, want none", got)
	}

	mustExec(t, p, `INSERT INTO workflow_workers (worker_id, project_id, task_queue_name, status) VALUES ('w1', $1, 'q', 'running')`, project)
	mustExec(t, p, `UPDATE workflow_workers SET last_heartbeat = now() WHERE worker_id = 'w1'`)
	if got := received(); len(got) != 0 {
		t.Fatalf("workflow_workers writes (heartbeats): notifications %v, want none", got)
	}

	// Two compiles in one transaction: one notification of the project (Postgres folds
	// duplicates), and one of each compiled version (for its compile feedback).
	var wf string
	if err := p.QueryRow(context.Background(),
		`INSERT INTO workflows (project_id, name, status) VALUES ($1, 'w', 'active') RETURNING id::text`, project).Scan(&wf); err != nil {
		t.Fatal(err)
	}
	received()
	rows, err := p.Query(context.Background(), `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, $2), ($1, $2) RETURNING 'compiled:' || id`, wf, code)
	if err != nil {
		t.Fatal(err)
	}
	compiled, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if got := received(); !slices.Equal(got, append([]string{project}, compiled...)) {
		t.Fatalf("compile: notifications %v, want [%s %s]", got, project, strings.Join(compiled, " "))
	}

	mustExec(t, p, `DELETE FROM projects WHERE id = $1`, project)
	if got := received(); len(got) != 1 || got[0] != project {
		t.Fatalf("delete: notifications %v, want [%s]", got, project)
	}
	var workerProject *string
	if err := p.QueryRow(context.Background(), `SELECT project_id::text FROM workflow_workers WHERE worker_id = 'w1'`).Scan(&workerProject); err != nil {
		t.Fatal(err)
	}
	if workerProject != nil {
		t.Errorf("worker row of a deleted project keeps project_id %s, want NULL (history kept)", *workerProject)
	}
}

func TestBadInputGetsAClearError(t *testing.T) {
	t.Parallel()
	d := testenv.Database(t)
	p := d.Pool
	project := newProject(t, p)
	var wf string
	if err := p.QueryRow(context.Background(),
		`INSERT INTO workflows (project_id, name) VALUES ($1, 'w') RETURNING id::text`, project).Scan(&wf); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		what, sql string
		args      []any
		want      string
	}{
		{"desired status outside the allowed values", `UPDATE projects SET desired_status = 'paused' WHERE id = $1`, []any{project}, "projects_desired_status_check"},
		{"workflow status outside the allowed values", `UPDATE workflows SET status = 'live' WHERE id = $1`, []any{wf}, "workflows_status_check"},
		{"unknown worker option", `UPDATE projects SET worker_options = '{"max_activities": 5}' WHERE id = $1`, []any{project}, `unknown key "max_activities"`},
		{"worker option of the wrong type", `UPDATE projects SET worker_options = '{"max_concurrent_activities": "5"}' WHERE id = $1`, []any{project}, "must be an integer between 1 and 10000"},
		{"one workflow poller", `UPDATE projects SET worker_options = '{"workflow_task_pollers": 1}' WHERE id = $1`, []any{project}, "must be at least 2"},
		{"reserved task queue prefix", `UPDATE projects SET task_queue_name = '/_sys/x' WHERE id = $1`, []any{project}, "projects_task_queue_name_check"},
		{"worker options not an object", `UPDATE projects SET worker_options = '[1]' WHERE id = $1`, []any{project}, "must be a JSON object"},
		{"invalid JSON", `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, '{"version": 1,')`, []any{wf}, "workflow_code is not valid JSON"},
		{"JSON that is not an object", `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, '[1, 2]')`, []any{wf}, "must be a JSON object"},
		{"wrong definition version", `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, '{"version": 2, "start": "a", "nodes": {}}')`, []any{wf}, `"version" must be 1`},
		{"missing start", `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, '{"version": 1, "nodes": {}}')`, []any{wf}, `"start" must name the first node`},
		{"oversized definition", `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, '{"version": 1, "start": "a", "nodes": {}, "description": "' || repeat('x', 1100000) || '"}')`, []any{wf}, "compiled_workflows_workflow_code_size_check"},
		{"component named like a built-in", `INSERT INTO components (project_id, name, implementation_language, implementation_code) VALUES ($1, 'echo', 'javascript', '')`, []any{project}, "components_name_not_builtin_check"},
		{"component in another language", `INSERT INTO components (project_id, name, implementation_language, implementation_code) VALUES ($1, 'x', 'python', '')`, []any{project}, "components_implementation_language_check"},
		{"duplicate task queue", `INSERT INTO projects (name, task_queue_name) SELECT 'dup', task_queue_name FROM projects WHERE id = $1`, []any{project}, "projects_task_queue_name_key"},
	}
	for _, c := range cases {
		if msg := execErr(t, p, c.sql, c.args...); !strings.Contains(msg, c.want) {
			t.Errorf("%s: error %q does not say %q", c.what, msg, c.want)
		}
	}
}

func TestCompiledVersionsAreAssignedIncreasingAndImmutable(t *testing.T) {
	t.Parallel()
	d := testenv.Database(t)
	p := d.Pool
	project := newProject(t, p)
	var wf string
	if err := p.QueryRow(context.Background(),
		`INSERT INTO workflows (project_id, name) VALUES ($1, 'w') RETURNING id::text`, project).Scan(&wf); err != nil {
		t.Fatal(err)
	}
	var v1, v2 int
	if err := p.QueryRow(context.Background(), `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, $2) RETURNING version`, wf, code).Scan(&v1); err != nil {
		t.Fatal(err)
	}
	if err := p.QueryRow(context.Background(), `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, $2) RETURNING version`, wf, code).Scan(&v2); err != nil {
		t.Fatal(err)
	}
	if v1 != 1 || v2 != 2 {
		t.Fatalf("assigned versions %d, %d; want 1, 2", v1, v2)
	}
	if msg := execErr(t, p, `INSERT INTO compiled_workflows (workflow_id, version, workflow_code) VALUES ($1, 2, $2)`, wf, code); !strings.Contains(msg, "version must increase") {
		t.Errorf("explicit older version: %q", msg)
	}
	mustExec(t, p, `INSERT INTO compiled_workflows (workflow_id, version, workflow_code) VALUES ($1, 10, $2)`, wf, code)
	if msg := execErr(t, p, `UPDATE compiled_workflows SET workflow_code = $2 WHERE workflow_id = $1`, wf, code); !strings.Contains(msg, "immutable") {
		t.Errorf("update of a compiled row: %q", msg)
	}
}
