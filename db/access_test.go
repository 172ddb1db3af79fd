package db_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

// as runs fn in a transaction the way Supabase's API (PostgREST) runs a request: logged
// in as authenticator (pool), SET LOCAL ROLE to the request's role and the JWT claims
// in request.jwt.claims. Each statement runs in a savepoint so that a refused one does
// not end the test's transaction.
type session struct {
	t  *testing.T
	tx pgx.Tx
	n  int
}

func as(t *testing.T, pool *pgxpool.Pool, role string, sub uuid.UUID, fn func(s *session)) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	claims := fmt.Sprintf(`{"sub": %q, "role": %q}`, sub, role)
	if sub == uuid.Nil {
		claims = fmt.Sprintf(`{"role": %q}`, role)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claims', $1, true)`, claims); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	fn(&session{t: t, tx: tx})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// try runs a statement and returns its error, keeping the transaction usable.
func (s *session) try(sql string, args ...any) error {
	s.t.Helper()
	ctx := context.Background()
	s.n++
	sp := fmt.Sprintf("sp%d", s.n)
	if _, err := s.tx.Exec(ctx, "SAVEPOINT "+sp); err != nil {
		s.t.Fatal(err)
	}
	_, err := s.tx.Exec(ctx, sql, args...)
	if err != nil {
		if _, rerr := s.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+sp); rerr != nil {
			s.t.Fatal(rerr)
		}
	}
	return err
}

func (s *session) must(sql string, args ...any) {
	s.t.Helper()
	if err := s.try(sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

func (s *session) refused(sql, want string, args ...any) {
	s.t.Helper()
	err := s.try(sql, args...)
	if err == nil {
		s.t.Errorf("%s: accepted, want it refused (%s)", sql, want)
	} else if !strings.Contains(err.Error(), want) {
		s.t.Errorf("%s: %v, want %q", sql, err, want)
	}
}

func (s *session) count(sql string, args ...any) int {
	s.t.Helper()
	var n int
	if err := s.tx.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (s *session) health(fn string, project uuid.UUID) (desired string, generation int64, err error) {
	s.t.Helper()
	s.n++
	sp := fmt.Sprintf("sp%d", s.n)
	ctx := context.Background()
	if _, err := s.tx.Exec(ctx, "SAVEPOINT "+sp); err != nil {
		s.t.Fatal(err)
	}
	err = s.tx.QueryRow(ctx, "SELECT desired_status, generation_desired FROM "+fn+"($1)", project).Scan(&desired, &generation)
	if err != nil {
		_, _ = s.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+sp)
	}
	return desired, generation, err
}

func TestSupabaseRolesAndRowLevelSecurity(t *testing.T) {
	t.Parallel()
	for _, layout := range testenv.Layouts {
		t.Run(layout.Name, func(t *testing.T) {
			t.Parallel()
			testRolesAndRowLevelSecurity(t, layout.Database(t))
		})
	}
}

func testRolesAndRowLevelSecurity(t *testing.T, d *testenv.DB) {
	api := d.Authenticator(t)
	alice, bob := uuid.New(), uuid.New()
	var aliceProject, bobProject uuid.UUID
	var aliceWorkflow uuid.UUID

	as(t, api, "authenticated", alice, func(s *session) {
		if err := s.tx.QueryRow(context.Background(),
			`INSERT INTO projects (name, task_queue_name) VALUES ('alice', 'alice-q') RETURNING id`).Scan(&aliceProject); err != nil {
			t.Fatalf("alice creates a project: %v", err)
		}
		if err := s.tx.QueryRow(context.Background(),
			`INSERT INTO workflows (project_id, name, status) VALUES ($1, 'w', 'active') RETURNING id`, aliceProject).Scan(&aliceWorkflow); err != nil {
			t.Fatalf("alice creates a workflow: %v", err)
		}
		s.must(`INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, $2)`, aliceWorkflow, code)
		s.must(`INSERT INTO components (project_id, name, implementation_language, implementation_code) VALUES ($1, 'c', 'javascript', 'function c() {}')`, aliceProject)
	})
	as(t, api, "authenticated", bob, func(s *session) {
		if err := s.tx.QueryRow(context.Background(),
			`INSERT INTO projects (name, task_queue_name) VALUES ('bob', 'bob-q') RETURNING id`).Scan(&bobProject); err != nil {
			t.Fatal(err)
		}
		s.must(`INSERT INTO workflows (project_id, name) VALUES ($1, 'secret')`, bobProject)
	})
	mustExec(t, d.Pool, `INSERT INTO workflow_workers (worker_id, project_id, task_queue_name, status) VALUES ('wa', $1, 'alice-q', 'running'), ('wb', $2, 'bob-q', 'running')`, aliceProject, bobProject)
	mustExec(t, d.Pool, `INSERT INTO compiled_workflow_checks (compiled_workflow_id, valid, checked_by) SELECT id, true, 'test' FROM compiled_workflows`)

	t.Run("compile feedback is the owner's to read", func(t *testing.T) {
		as(t, api, "authenticated", alice, func(s *session) {
			if n := s.count(`SELECT count(*) FROM compiled_workflow_checks`); n != 1 {
				t.Errorf("alice sees %d checks of her compiles, want 1", n)
			}
			s.refused(`UPDATE compiled_workflow_checks SET valid = false`, "permission denied")
		})
		as(t, api, "authenticated", bob, func(s *session) {
			if n := s.count(`SELECT count(*) FROM compiled_workflow_checks`); n != 0 {
				t.Errorf("bob sees %d checks of alice's compiles", n)
			}
		})
		as(t, api, "anon", uuid.Nil, func(s *session) {
			s.refused(`SELECT count(*) FROM compiled_workflow_checks`, "permission denied")
		})
	})

	t.Run("a user acts on their own project", func(t *testing.T) {
		as(t, api, "authenticated", alice, func(s *session) {
			if n := s.count(`SELECT count(*) FROM projects WHERE owner_id = $1`, alice); n != 1 {
				t.Errorf("alice sees %d of her projects", n)
			}
			desired, _, err := s.health("start_project_worker", aliceProject)
			if err != nil || desired != "running" {
				t.Errorf("start: %s, %v", desired, err)
			}
			desired, _, err = s.health("stop_project_worker", aliceProject)
			if err != nil || desired != "stopped" {
				t.Errorf("stop: %s, %v", desired, err)
			}
			before := s.count(`SELECT generation FROM projects WHERE id = $1`, aliceProject)
			desired, gen, err := s.health("restart_project_worker", aliceProject)
			if err != nil || desired != "running" || gen != int64(before)+1 {
				t.Errorf("restart: %s generation %d (was %d), %v", desired, gen, before, err)
			}
			if n := s.count(`SELECT restart_generation FROM projects WHERE id = $1`, aliceProject); n != before+1 {
				t.Errorf("restart_generation %d, want %d", n, before+1)
			}
			if n := s.count(`SELECT count(*) FROM project_worker_health`); n != 1 {
				t.Errorf("alice's health view has %d rows, want her 1", n)
			}
			if n := s.count(`SELECT count(*) FROM workflow_workers`); n != 1 {
				t.Errorf("alice sees %d worker rows, want her 1", n)
			}
		})
	})

	t.Run("a user cannot see or change another user's project", func(t *testing.T) {
		as(t, api, "authenticated", alice, func(s *session) {
			for _, fn := range []string{"start_project_worker", "stop_project_worker", "restart_project_worker"} {
				unknown := uuid.New()
				_, _, errOther := s.health(fn, bobProject)
				_, _, errUnknown := s.health(fn, unknown)
				if errOther == nil || errUnknown == nil {
					t.Fatalf("%s on bob's project: %v; on an unknown id: %v; want both refused", fn, errOther, errUnknown)
				}
				other := strings.ReplaceAll(errOther.Error(), bobProject.String(), "<id>")
				missing := strings.ReplaceAll(errUnknown.Error(), unknown.String(), "<id>")
				if other != missing || !strings.Contains(other, "project <id> not found") {
					t.Errorf("%s: another user's project gives %q, an unknown id %q; want the same clear error", fn, other, missing)
				}
			}
			for table, q := range map[string]string{
				"projects":           `SELECT count(*) FROM projects WHERE id = $1`,
				"workflows":          `SELECT count(*) FROM workflows WHERE project_id = $1`,
				"workflow_workers":   `SELECT count(*) FROM workflow_workers WHERE project_id = $1`,
				"compiled_workflows": `SELECT count(*) FROM compiled_workflows c JOIN workflows w ON w.id = c.workflow_id WHERE w.project_id = $1`,
			} {
				if n := s.count(q, bobProject); n != 0 {
					t.Errorf("alice sees %d of bob's %s rows", n, table)
				}
			}
			if n := s.count(`WITH u AS (UPDATE projects SET desired_status = 'running' WHERE id = $1 RETURNING 1) SELECT count(*) FROM u`, bobProject); n != 0 {
				t.Errorf("alice changed bob's desired_status")
			}
			s.refused(`INSERT INTO projects (owner_id, name, task_queue_name) VALUES ($1, 'x', 'x-q')`, "row-level security", bob)
			s.refused(`INSERT INTO workflows (project_id, name) VALUES ($1, 'x')`, "row-level security", bobProject)
			s.refused(`UPDATE projects SET generation = 99 WHERE id = $1`, "permission denied", aliceProject)
			s.refused(`UPDATE projects SET restart_generation = 99 WHERE id = $1`, "permission denied", aliceProject)
			s.refused(`INSERT INTO workflow_workers (worker_id, task_queue_name, status) VALUES ('x', 'q', 'running')`, "permission denied")
			s.refused(`UPDATE workflow_workers SET status = 'stopped'`, "permission denied")
			s.refused(`SELECT reconciler_bump_generation($1)`, "does not exist", bobProject)
			s.refused(`SELECT reconciler_private.bump_generation($1)`, "permission denied for schema reconciler_private", bobProject)
		})
	})

	t.Run("anon can do nothing", func(t *testing.T) {
		as(t, api, "anon", uuid.Nil, func(s *session) {
			s.refused(`SELECT count(*) FROM projects`, "permission denied")
			s.refused(`SELECT count(*) FROM workflow_workers`, "permission denied")
			s.refused(`SELECT count(*) FROM project_worker_health`, "permission denied")
			s.refused(`SELECT start_project_worker($1)`, "permission denied", aliceProject)
			s.refused(`INSERT INTO projects (name, task_queue_name) VALUES ('x', 'anon-q')`, "permission denied")
		})
	})

	t.Run("service_role can do all", func(t *testing.T) {
		as(t, api, "service_role", uuid.Nil, func(s *session) {
			if n := s.count(`SELECT count(*) FROM projects`); n != 2 {
				t.Errorf("service_role sees %d projects, want 2", n)
			}
			for _, p := range []uuid.UUID{aliceProject, bobProject} {
				if desired, _, err := s.health("start_project_worker", p); err != nil || desired != "running" {
					t.Errorf("service_role starts %s: %s, %v", p, desired, err)
				}
			}
			if n := s.count(`SELECT count(*) FROM project_worker_health`); n != 2 {
				t.Errorf("service_role's health view has %d rows", n)
			}
		})
	})

	t.Run("a user's compile still reloads their worker", func(t *testing.T) {
		var before, after int64
		_ = d.Pool.QueryRow(context.Background(), `SELECT generation FROM projects WHERE id = $1`, aliceProject).Scan(&before)
		as(t, api, "authenticated", alice, func(s *session) {
			s.must(`INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, $2)`, aliceWorkflow, code)
		})
		_ = d.Pool.QueryRow(context.Background(), `SELECT generation FROM projects WHERE id = $1`, aliceProject).Scan(&after)
		if after != before+1 {
			t.Errorf("a compile by the owner moved generation %d -> %d", before, after)
		}
	})
}
