// Package sql holds the operators' psql scripts; this test runs each one with psql
// against a test database and checks its effect.
package sql_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// eachLayout runs test on a plain PostgreSQL database and on one laid out like
// Supabase's, where the operator's postgres is not a superuser.
func eachLayout(t *testing.T, test func(t *testing.T, db *testenv.DB)) {
	t.Parallel()
	for _, layout := range testenv.Layouts {
		t.Run(layout.Name, func(t *testing.T) {
			t.Parallel()
			test(t, layout.Database(t))
		})
	}
}

func psqlPath(t *testing.T) string {
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql"); len(m) > 0 {
		return m[len(m)-1]
	}
	t.Fatal("psql not found: install postgresql-client")
	return ""
}

func psql(t *testing.T, db *testenv.DB, script string, vars ...string) string {
	t.Helper()
	args := []string{db.URL, "-X", "-f", script}
	for _, v := range vars {
		args = append(args, "-v", v)
	}
	out, err := exec.Command(psqlPath(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("psql -f %s: %v\n%s", script, err, out)
	}
	return string(out)
}

// fleet sets up three projects: one healthy and running, one stopped, one that should
// run but whose worker failed twice in the last hour.
func fleet(t *testing.T, db *testenv.DB) (healthy, stopped, failing uuid.UUID) {
	t.Helper()
	healthy, stopped, failing = uuid.New(), uuid.New(), uuid.New()
	ctx := context.Background()
	for _, stmt := range []string{
		`INSERT INTO projects (id, name, task_queue_name, desired_status) VALUES
			($1, 'healthy', 'q-healthy', 'running'), ($2, 'parked', 'q-parked', 'stopped'), ($3, 'crashing', 'q-crashing', 'running')`,
		`INSERT INTO workflow_workers (worker_id, project_id, task_queue_name, status, started_at, stopped_at, last_heartbeat, generation, metadata) VALUES
			('w-healthy', $1, 'q-healthy', 'running', now(), NULL, now(), 1, '{"heartbeat_interval_seconds": 10}'),
			('w-parked', $2, 'q-parked', 'stopped', now(), now(), now(), 1, '{}'),
			('w-crash-1', $3, 'q-crashing', 'failed', now() - interval '20 minutes', now() - interval '19 minutes', NULL, 1, '{"error": "first crash", "restarts": 1}'),
			('w-crash-2', $3, 'q-crashing', 'failed', now() - interval '5 minutes', now() - interval '4 minutes', NULL, 1, '{"error": "second crash", "restarts": 2}')`,
	} {
		if _, err := db.Pool.Exec(ctx, stmt, healthy, stopped, failing); err != nil {
			t.Fatal(err)
		}
	}
	return healthy, stopped, failing
}

func desired(t *testing.T, db *testenv.DB, id uuid.UUID) (status string, restartGeneration int64) {
	t.Helper()
	if err := db.Pool.QueryRow(context.Background(), `SELECT desired_status, restart_generation FROM projects WHERE id = $1`, id).Scan(&status, &restartGeneration); err != nil {
		t.Fatal(err)
	}
	return status, restartGeneration
}

func TestFleetStatus(t *testing.T) {
	eachLayout(t, func(t *testing.T, db *testenv.DB) {
		fleet(t, db)
		out := psql(t, db, "fleet_status.sql")
		lines := strings.Split(out, "\n")
		if !strings.Contains(lines[0], "project") || !strings.Contains(lines[0], "healthy") || !strings.Contains(out, "(3 rows)") {
			t.Fatalf("fleet_status:\n%s", out)
		}
		if !strings.HasPrefix(strings.TrimSpace(lines[2]), "crashing") || !strings.Contains(lines[2], "second crash") {
			t.Errorf("the failing project is not first, with its error:\n%s", out)
		}
	})
}

func TestUnhealthyListsCrashLoopsOnly(t *testing.T) {
	eachLayout(t, func(t *testing.T, db *testenv.DB) {
		fleet(t, db)
		out := psql(t, db, "unhealthy.sql")
		if !strings.Contains(out, "(1 row)") || !strings.Contains(out, "crashing") || strings.Contains(out, "parked") {
			t.Fatalf("unhealthy:\n%s", out)
		}
		fields := strings.Split(strings.Split(out, "\n")[2], "|")
		if len(fields) < 5 || strings.TrimSpace(fields[4]) != "2" {
			t.Errorf("failures_last_hour of the crashing project is not 2:\n%s", out)
		}
	})
}

func TestRestartFailedRestartsOnlyFailedProjects(t *testing.T) {
	eachLayout(t, func(t *testing.T, db *testenv.DB) {
		healthy, stopped, failing := fleet(t, db)
		out := psql(t, db, "restart_failed.sql")
		if !strings.Contains(out, "crashing") || !strings.Contains(out, "(1 row)") {
			t.Fatalf("restart_failed:\n%s", out)
		}
		if _, g := desired(t, db, failing); g == 0 {
			t.Error("the failing project was not restarted")
		}
		for _, id := range []uuid.UUID{healthy, stopped} {
			if _, g := desired(t, db, id); g != 0 {
				t.Errorf("project %s was restarted though its worker did not fail", id)
			}
		}
	})
}

func TestStopProject(t *testing.T) {
	eachLayout(t, func(t *testing.T, db *testenv.DB) {
		healthy, _, failing := fleet(t, db)
		out := psql(t, db, "stop_project.sql", "project="+healthy.String())
		if !strings.Contains(out, "healthy") || !strings.Contains(out, "stopped") {
			t.Fatalf("stop_project:\n%s", out)
		}
		if s, _ := desired(t, db, healthy); s != "stopped" {
			t.Errorf("desired_status %s after stop_project", s)
		}
		if s, _ := desired(t, db, failing); s != "running" {
			t.Errorf("stop_project stopped another project too")
		}
		usage := psql(t, db, "stop_project.sql")
		if !strings.Contains(usage, "usage:") {
			t.Errorf("without -v project it printed %q, want the usage", usage)
		}
	})
}

func TestDrainStopsEverything(t *testing.T) {
	eachLayout(t, func(t *testing.T, db *testenv.DB) {
		healthy, stopped, failing := fleet(t, db)
		out := psql(t, db, "drain.sql")
		if !strings.Contains(out, "UPDATE 2") || !strings.Contains(out, "healthy") || !strings.Contains(out, "crashing") {
			t.Fatalf("drain:\n%s", out)
		}
		for _, id := range []uuid.UUID{healthy, stopped, failing} {
			if s, _ := desired(t, db, id); s != "stopped" {
				t.Errorf("project %s is %s after drain", id, s)
			}
		}
	})
}
