package db_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/internal/testenv"
)

var contractTables = []string{"compiled_workflows", "components", "projects", "workflow_workers", "workflows"}

func publicTables(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT tablename FROM pg_tables
		WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
		ORDER BY tablename`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		out = append(out, name)
	}
	return out
}

func publicFunctions(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	err := pool.QueryRow(context.Background(), `
		SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'public'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func containsAll(have, want []string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

// The migrations must work unchanged with the upstream CLI (SPEC section 2).
func TestUpstreamMigrateCLIAppliesAndRevertsEverything(t *testing.T) {
	t.Parallel()
	root, err := devenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cli := filepath.Join(root, "bin", "migrate")
	if _, err := os.Stat(cli); err != nil {
		t.Fatalf("upstream migrate CLI not built (run `make tools`): %v", err)
	}
	d := testenv.EmptyDatabase(t)
	migrate := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"-path", filepath.Join(root, "migrations"), "-database", d.URL}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("migrate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	migrate("up")
	if tables := publicTables(t, d.Pool); !containsAll(tables, contractTables) {
		t.Fatalf("after up, tables = %v, want at least %v", tables, contractTables)
	}
	migrate("down", "-all")
	if tables := publicTables(t, d.Pool); len(tables) != 0 {
		t.Fatalf("after down -all, tables left: %v", tables)
	}
	if n := publicFunctions(t, d.Pool); n != 0 {
		t.Fatalf("after down -all, %d functions left in public", n)
	}
	// And up again: down must leave nothing that breaks a second up.
	migrate("up")
	if tables := publicTables(t, d.Pool); !containsAll(tables, contractTables) {
		t.Fatalf("after the second up, tables = %v", tables)
	}
}

// The embedded migrator (reconciler migrate) goes up, down step by step, and reports versions.
func TestEmbeddedMigratorUpDownVersion(t *testing.T) {
	t.Parallel()
	d := testenv.EmptyDatabase(t)
	ctx := context.Background()
	m, err := db.NewMigrator(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, _, ok, err := m.Version(); err != nil || ok {
		t.Fatalf("fresh database: version ok=%v err=%v, want no version", ok, err)
	}
	if err := m.Up(); err != nil {
		t.Fatal(err)
	}
	if err := m.Up(); err != nil {
		t.Fatalf("a second up must be a no-op: %v", err)
	}
	top, dirty, ok, err := m.Version()
	if err != nil || !ok || dirty || top < 2 {
		t.Fatalf("after up: version %d dirty=%v ok=%v err=%v", top, dirty, ok, err)
	}
	for v := top; v > 0; v-- {
		if err := m.Down(1); err != nil {
			t.Fatalf("down 1 from version %d: %v", v, err)
		}
	}
	if tables := publicTables(t, d.Pool); len(tables) != 0 {
		t.Fatalf("after stepping down every migration, tables left: %v", tables)
	}
	if err := m.Down(0); err == nil {
		t.Fatal("down 0 must be refused")
	}
}

// On Supabase, auth.uid() exists already: the migrations use it and leave it alone, up
// and down.
func TestMigrationsKeepAnExistingAuthSchema(t *testing.T) {
	t.Parallel()
	d := testenv.EmptyDatabase(t)
	ctx := context.Background()
	const supabaseUID = `CREATE SCHEMA auth;
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
			SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid /* supabase */ $$`
	if _, err := d.Pool.Exec(ctx, supabaseUID); err != nil {
		t.Fatal(err)
	}
	body := func() string {
		var src string
		if err := d.Pool.QueryRow(ctx, `SELECT prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'auth' AND p.proname = 'uid'`).Scan(&src); err != nil {
			t.Fatalf("auth.uid(): %v", err)
		}
		return src
	}
	m, err := db.NewMigrator(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Up(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body(), "/* supabase */") {
		t.Fatal("the migrations replaced an existing auth.uid()")
	}
	v, _, _, _ := m.Version()
	if err := m.Down(int(v)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body(), "/* supabase */") {
		t.Fatal("the down migrations dropped an auth.uid() they did not create")
	}
}
