package db_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/internal/testenv"
)

// exposedSchemas are the schemas Supabase's API (PostgREST, pg_graphql) serves.
const exposedSchemas = `('public', 'graphql_public')`

// The contract of SPEC section 3 is all that anon and authenticated may reach: the
// three RPC functions (authenticated only) and tables under Row Level Security (or the
// security_invoker view over them). A migration that adds a function or a table in
// public and forgets to close it fails here.
func TestAPIRolesReachOnlyTheContract(t *testing.T) {
	t.Parallel()
	for _, layout := range testenv.Layouts {
		t.Run(layout.Name, func(t *testing.T) {
			t.Parallel()
			d := layout.Database(t)
			ctx := context.Background()
			wantFunctions := map[string][]string{
				"anon":          nil,
				"authenticated": {"public.restart_project_worker(uuid)", "public.start_project_worker(uuid)", "public.stop_project_worker(uuid)"},
			}
			for role, want := range wantFunctions {
				got := queryStrings(t, d.Pool, `
					SELECT n.nspname || '.' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')'
					FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
					WHERE n.nspname IN `+exposedSchemas+`
					  AND has_schema_privilege($1, n.oid, 'USAGE')
					  AND has_function_privilege($1, p.oid, 'EXECUTE')
					  AND NOT EXISTS (SELECT FROM pg_depend dep WHERE dep.objid = p.oid AND dep.deptype = 'e')
					ORDER BY 1`, role)
				if !slices.Equal(got, want) {
					t.Errorf("%s may execute %v; the contract is %v", role, got, want)
				}
			}

			contract := []string{"compiled_workflow_checks", "compiled_workflows", "components", "project_leases", "project_worker_health", "projects", "workflow_workers", "workflows"}
			for _, role := range []string{"anon", "authenticated"} {
				rows, err := d.Pool.Query(ctx, `
					SELECT n.nspname, c.relname, c.relkind::text, c.relrowsecurity,
					       coalesce('security_invoker=true' = ANY (c.reloptions), false)
					FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
					WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
					  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
					  AND has_schema_privilege($1, n.oid, 'USAGE')
					  AND (has_table_privilege($1, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
					       OR (c.relkind = 'S' AND has_sequence_privilege($1, c.oid, 'USAGE, SELECT, UPDATE')))
					ORDER BY 1, 2`, role)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var schema, name, kind string
					var rls, invoker bool
					if err := rows.Scan(&schema, &name, &kind, &rls, &invoker); err != nil {
						t.Fatal(err)
					}
					if schema == "auth" {
						continue // Supabase's own, not this service's
					}
					switch {
					case schema != "public" || !slices.Contains(contract, name):
						t.Errorf("%s may touch %s.%s (relkind %s), which is not part of the contract", role, schema, name, kind)
					case kind == "v" && !invoker:
						t.Errorf("%s may read the view %s.%s, which does not run with the caller's privileges", role, schema, name)
					case kind != "v" && !rls:
						t.Errorf("%s may touch %s.%s, which has no row level security", role, schema, name)
					}
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
			}

			for _, role := range []string{"anon", "authenticated", "service_role"} {
				var usage bool
				if err := d.Pool.QueryRow(ctx, `SELECT has_schema_privilege($1, 'reconciler_private', 'USAGE')`, role).Scan(&usage); err != nil {
					t.Fatal(err)
				}
				if usage {
					t.Errorf("%s has USAGE on reconciler_private", role)
				}
			}
		})
	}
}

// Whatever function anon or another user can execute, called with a user's project
// id, changes nothing of that project (no bump, reload, restart or status change) and
// reads nothing of it.
func TestNoFunctionReachesAnotherUsersProject(t *testing.T) {
	t.Parallel()
	for _, layout := range testenv.Layouts {
		t.Run(layout.Name, func(t *testing.T) {
			t.Parallel()
			d := layout.Database(t)
			api := d.Authenticator(t)
			ctx := context.Background()
			alice, bob := uuid.New(), uuid.New()
			var project uuid.UUID
			as(t, api, "authenticated", alice, func(s *session) {
				if err := s.tx.QueryRow(ctx, `INSERT INTO projects (name, task_queue_name) VALUES ('secret-name', 'alice-secret-q') RETURNING id`).Scan(&project); err != nil {
					t.Fatal(err)
				}
				s.must(`INSERT INTO workflows (project_id, name, status) VALUES ($1, 'w', 'active')`, project)
			})
			before := projectState(t, d.Pool, project)

			for _, caller := range []struct {
				role string
				sub  uuid.UUID
			}{{"anon", uuid.Nil}, {"authenticated", bob}} {
				as(t, api, caller.role, caller.sub, func(s *session) {
					fns := queryStringsTx(t, s.tx, `
						SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
						WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'auth')
						  AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
						  AND has_schema_privilege(n.oid, 'USAGE') AND has_function_privilege(p.oid, 'EXECUTE')`)
					for _, fn := range fns {
						call, args := callWith(fn, project)
						var out string
						s.n++
						sp := fmt.Sprintf("sp%d", s.n)
						if _, err := s.tx.Exec(ctx, "SAVEPOINT "+sp); err != nil {
							t.Fatal(err)
						}
						err := s.tx.QueryRow(ctx, `SELECT coalesce(to_jsonb(r)::text, '') FROM `+call+` r`, args...).Scan(&out)
						if err != nil {
							_, _ = s.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+sp)
						}
						if strings.Contains(out, "secret") || strings.Contains(out, project.String()) && strings.Contains(out, "generation") {
							t.Errorf("as %s, %s returned alice's project: %s", caller.role, fn, out)
						}
					}
				})
				if after := projectState(t, d.Pool, project); after != before {
					t.Errorf("as %s, some function changed alice's project: %s -> %s", caller.role, before, after)
				}
			}
		})
	}
}

// The migrations table is no business of the API roles: they can neither read it nor
// mark the schema dirty.
func TestMigrationsTableIsClosedToTheAPI(t *testing.T) {
	t.Parallel()
	for _, layout := range testenv.Layouts {
		t.Run(layout.Name, func(t *testing.T) {
			t.Parallel()
			d := layout.Database(t)
			api := d.Authenticator(t)
			for _, role := range []string{"anon", "authenticated"} {
				as(t, api, role, uuid.New(), func(s *session) {
					s.refused(`SELECT count(*) FROM schema_migrations`, "permission denied")
					s.refused(`UPDATE schema_migrations SET dirty = true`, "permission denied")
					s.refused(`DELETE FROM schema_migrations`, "permission denied")
					s.refused(`TRUNCATE schema_migrations`, "permission denied")
					s.refused(`INSERT INTO schema_migrations (version, dirty) VALUES (99, true)`, "permission denied")
				})
			}
			var version int64
			var dirty bool
			if err := d.Pool.QueryRow(context.Background(), `SELECT version, dirty FROM schema_migrations`).Scan(&version, &dirty); err != nil || dirty {
				t.Fatalf("schema_migrations as its owner: version %d dirty %v, %v", version, dirty, err)
			}
		})
	}
}

// On a Supabase database the migrations run as postgres, which is not a superuser:
// up, down to nothing and up again, with the upstream CLI and with the embedded
// migrator, leaving Supabase's auth schema as it was.
func TestMigrationsUpDownUpAsSupabasesPostgres(t *testing.T) {
	t.Parallel()
	root, err := devenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cli := filepath.Join(root, "bin", "migrate")
	ctx := context.Background()

	t.Run("upstream CLI", func(t *testing.T) {
		t.Parallel()
		d := testenv.Supabase.EmptyDatabase(t)
		requireNotSuperuser(t, d.Pool)
		migrate := func(args ...string) {
			t.Helper()
			out, err := exec.Command(cli, append([]string{"-path", filepath.Join(root, "migrations"), "-database", d.URL}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("migrate %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		migrate("up")
		checkMigrated(t, d.Pool)
		migrate("down", "-all")
		if tables := publicTables(t, d.Pool); len(tables) != 0 {
			t.Fatalf("after down -all, tables left: %v", tables)
		}
		if n := publicFunctions(t, d.Pool); n != 0 {
			t.Fatalf("after down -all, %d functions left in public", n)
		}
		migrate("up")
		checkMigrated(t, d.Pool)
		checkSupabaseAuthUntouched(t, d.Pool)
	})

	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		d := testenv.Supabase.EmptyDatabase(t)
		m, err := db.NewMigrator(ctx, d.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Up(); err != nil {
			t.Fatal(err)
		}
		v, _, _, err := m.Version()
		if err != nil {
			t.Fatal(err)
		}
		for step := int(v); step > 0; step-- {
			if err := m.Down(1); err != nil {
				t.Fatalf("down from %d: %v", step, err)
			}
		}
		if err := m.Up(); err != nil {
			t.Fatal(err)
		}
		checkMigrated(t, d.Pool)
		checkSupabaseAuthUntouched(t, d.Pool)
	})
}

func requireNotSuperuser(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var super bool
	if err := pool.QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		t.Fatalf("postgres is a superuser here (%v): the layout is not Supabase's", err)
	}
}

func checkMigrated(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if tables := publicTables(t, pool); !containsAll(tables, contractTables) {
		t.Fatalf("tables = %v, want at least %v", tables, contractTables)
	}
	// The triggers work through the private schema.
	project := newProject(t, pool)
	g := gen(t, pool, project)
	mustExec(t, pool, `UPDATE projects SET worker_options = '{"max_concurrent_activities": 3}' WHERE id = $1`, project)
	if gen(t, pool, project) != g+1 {
		t.Fatal("a worker_options change did not bump the generation")
	}
}

func checkSupabaseAuthUntouched(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var owner string
	if err := pool.QueryRow(context.Background(), `
		SELECT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'auth' AND p.proname = 'uid'`).Scan(&owner); err != nil || owner != "supabase_admin" {
		t.Fatalf("auth.uid() owned by %q (%v), want Supabase's own", owner, err)
	}
}

// projectState is everything of a project that a function could change.
func projectState(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `
		SELECT concat_ws('/', desired_status, generation, restart_generation, restart_requested_at, updated_at, name, worker_options)
		FROM projects WHERE id = $1`, id).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// callWith builds a call of fn (a regprocedure such as "f(uuid,text)") passing the
// project id to uuid parameters and NULL to the others.
func callWith(fn string, project uuid.UUID) (string, []any) {
	open := strings.Index(fn, "(")
	params := strings.TrimSuffix(fn[open+1:], ")")
	var exprs []string
	var args []any
	if params != "" {
		for _, typ := range strings.Split(params, ",") {
			typ = strings.TrimSpace(typ)
			if typ == "uuid" {
				args = append(args, project)
				exprs = append(exprs, fmt.Sprintf("$%d::uuid", len(args)))
			} else {
				exprs = append(exprs, "NULL::"+typ)
			}
		}
	}
	return fn[:open] + "(" + strings.Join(exprs, ", ") + ")", args
}

func queryStrings(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func queryStringsTx(t *testing.T, tx pgx.Tx, sql string, args ...any) []string {
	t.Helper()
	rows, err := tx.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
