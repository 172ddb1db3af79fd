// Package testenv is the test harness: one private PostgreSQL and (on first use) one
// Temporal dev server per `go test` package run, and a freshly migrated database per
// test so that tests run in parallel. Everything it starts is stopped when the package's
// tests end, pass or fail; the servers also die with the test binary if it is killed.
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		db := testenv.Database(t)      // db.URL, db.Pool
//		tc := testenv.TemporalClient(t) // client of the shared dev server
//	}
package testenv

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	"go.uber.org/goleak"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/reconciler"
	"github.com/flowbuilder/reconciler/reconciler/component"
)

var (
	temporalOnce sync.Once
	temporal     *devenv.Temporal
	temporalErr  error
)

// Layout is how a test cluster's roles and privileges are laid out. Plain is a stock
// PostgreSQL whose superuser is postgres: the migrations create Supabase's roles and
// auth.uid() themselves. Supabase reproduces a Supabase project's database: the
// superuser is supabase_admin, postgres is an ordinary role (CREATEROLE, CREATEDB,
// BYPASSRLS) that owns the database and runs the migrations, the roles anon,
// authenticated, service_role and authenticator (which PostgREST logs in as) exist,
// the auth schema and auth.uid() belong to supabase_admin, and Supabase's default
// privileges grant anon, authenticated and service_role everything on each new table,
// function and sequence in public.
type Layout struct {
	Name string

	super     string // bootstrap superuser
	bootstrap []string

	once    sync.Once
	err     error
	pg      *devenv.Postgres
	base    string // a database with the layout and no migration
	tmplMu  sync.Mutex
	tmplErr error
	tmplOK  bool
}

var (
	// Plain is a stock PostgreSQL cluster (the package's default).
	Plain = &Layout{Name: "postgres", super: "postgres"}
	// Supabase is a cluster laid out like a Supabase project's (see Layout).
	Supabase = &Layout{Name: "supabase", super: "supabase_admin", bootstrap: []string{
		`CREATE ROLE postgres LOGIN CREATEROLE CREATEDB REPLICATION BYPASSRLS`,
		`CREATE ROLE anon NOLOGIN NOINHERIT`,
		`CREATE ROLE authenticated NOLOGIN NOINHERIT`,
		`CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS`,
		`CREATE ROLE authenticator LOGIN NOINHERIT`,
		`GRANT anon, authenticated, service_role TO authenticator`,
		`GRANT anon, authenticated, service_role TO postgres`,
	}}

	// Layouts are both, for tests that must hold on each.
	Layouts = []*Layout{Plain, Supabase}

	createMu sync.Mutex // CREATE DATABASE ... TEMPLATE wants the template to itself
	dbSeq    atomic.Int64
)

// supabaseDatabase is what Supabase puts in each project database before any
// migration of the app: the auth schema, owned by supabase_admin, and the default
// privileges that hand every new object in public to the API roles.
var supabaseDatabase = []string{
	`CREATE SCHEMA auth AUTHORIZATION supabase_admin`,
	`CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
		SELECT nullif(coalesce(current_setting('request.jwt.claim.sub', true),
			(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')), '')::uuid $$`,
	`GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, postgres`,
	`GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role`,
	`ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role`,
	`ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role`,
	`ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role`,
	`ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role`,
	`ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role`,
	`ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role`,
}

const templateDB = "reconciler_template"

// Main starts PostgreSQL, runs the package's tests, stops what was started, checks that
// no goroutine leaked and exits. A test binary started as a component sandbox (the
// services under test re-execute it) serves as one instead.
func Main(m *testing.M) {
	component.RunChildIfRequested()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := Plain.start(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	code := m.Run()
	if temporal != nil {
		temporal.Close()
	}
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	for _, l := range Layouts {
		if l.pg != nil {
			l.pg.Close()
		}
	}
	if code == 0 {
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: goroutines leaked:", err)
			return 1
		}
	}
	return code
}

// start starts the layout's cluster once (Plain at Main, Supabase on first use).
func (l *Layout) start() error {
	l.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l.pg, l.err = devenv.StartPostgresWith(ctx, devenv.PostgresOptions{Superuser: l.super})
		if l.err != nil {
			return
		}
		for _, stmt := range l.bootstrap {
			if l.err = l.adminExec(ctx, stmt); l.err != nil {
				l.err = fmt.Errorf("%s layout: %s: %w", l.Name, stmt, l.err)
				return
			}
		}
		if l == Supabase {
			l.base = "supabase_base"
			if l.err = l.adminExec(ctx, "CREATE DATABASE "+l.base+" OWNER postgres"); l.err != nil {
				return
			}
			conn, err := pgx.Connect(ctx, l.pg.SuperURL(l.base))
			if err != nil {
				l.err = err
				return
			}
			defer conn.Close(ctx)
			for _, stmt := range supabaseDatabase {
				if _, err := conn.Exec(ctx, stmt); err != nil {
					l.err = fmt.Errorf("supabase layout: %s: %w", stmt, err)
					return
				}
			}
		}
	})
	return l.err
}

// leakOptions ignores goroutines of libraries that end asynchronously after Close.
func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	}
}

// Postgres is the package's plain cluster (for tests that need a new database of their
// own shape, or the cluster's port).
func Postgres() *devenv.Postgres { return Plain.pg }

// Cluster is the layout's cluster, started if it was not.
func (l *Layout) Cluster(t testing.TB) *devenv.Postgres {
	t.Helper()
	if err := l.start(); err != nil {
		t.Fatalf("testenv: %s cluster: %v", l.Name, err)
	}
	return l.pg
}

// DB is a test's own database.
type DB struct {
	Name   string
	URL    string // as the role postgres: the superuser on Plain, the database owner on Supabase
	Pool   *pgxpool.Pool
	Layout *Layout
}

// URLAs is the connection string of the database for another login role (the test
// clusters trust local connections, so no password is needed).
func (d *DB) URLAs(user string) string {
	return d.Layout.pg.URLAs(user, d.Name)
}

// Authenticator is a pool logged in as authenticator, the role PostgREST connects
// as, closed when t ends. On Plain the role is created (once per cluster) the way
// Supabase defines it.
func (d *DB) Authenticator(t testing.TB) *pgxpool.Pool {
	t.Helper()
	if d.Layout == Plain {
		err := d.Layout.adminExec(context.Background(), `DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
				CREATE ROLE authenticator LOGIN NOINHERIT;
			END IF;
			GRANT anon, authenticated, service_role TO authenticator;
		EXCEPTION WHEN unique_violation OR duplicate_object THEN NULL;
		END $$`)
		if err != nil {
			t.Fatalf("testenv: authenticator role: %v", err)
		}
	}
	pool, err := pgxpool.New(context.Background(), d.URLAs("authenticator"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Database creates a migrated database on the plain cluster for t, dropped when t ends.
func Database(t testing.TB) *DB {
	t.Helper()
	return Plain.Database(t)
}

// EmptyDatabase creates a database without any migration on the plain cluster,
// dropped when t ends.
func EmptyDatabase(t testing.TB) *DB {
	t.Helper()
	return Plain.EmptyDatabase(t)
}

// Database creates a migrated database of this layout for t, dropped when t ends.
// The migrations ran as postgres (a non-superuser on Supabase).
func (l *Layout) Database(t testing.TB) *DB {
	t.Helper()
	return l.database(t, true)
}

// EmptyDatabase creates a database of this layout (Supabase's roles, auth schema and
// default privileges on Supabase) without any migration, dropped when t ends.
func (l *Layout) EmptyDatabase(t testing.TB) *DB {
	t.Helper()
	return l.database(t, false)
}

func (l *Layout) database(t testing.TB, migrated bool) *DB {
	t.Helper()
	if err := l.start(); err != nil {
		t.Fatalf("testenv: %s cluster: %v", l.Name, err)
	}
	ctx := context.Background()
	// The template first, also for an empty database: its migration creates the
	// cluster's roles (anon, reconciler_service...) once, before tests migrate databases
	// of the cluster in parallel. The db tests failed once with "role
	// reconciler_service does not exist" in 000003 while parallel tests migrated empty
	// databases; likely the migration that loses the race to create the role still
	// misses it in its catalog cache. Real deployments migrate one database at a time.
	if err := l.template(ctx); err != nil {
		t.Fatalf("testenv: %s template database: %v", l.Name, err)
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), dbSeq.Add(1))
	stmt := "CREATE DATABASE " + name + " OWNER postgres"
	switch {
	case migrated:
		stmt += " TEMPLATE " + templateDB
	case l.base != "":
		stmt += " TEMPLATE " + l.base
	}
	createMu.Lock()
	err := l.adminExec(ctx, stmt)
	createMu.Unlock()
	if err != nil {
		t.Fatalf("testenv: %s: %v", stmt, err)
	}
	d := &DB{Name: name, URL: l.pg.URL(name), Layout: l}
	cfg, err := pgxpool.ParseConfig(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 20
	d.Pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testenv: connect %s: %v", name, err)
	}
	t.Cleanup(func() {
		d.Pool.Close()
		_ = l.adminExec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return d
}

// template makes the migrated template database once (a failure is remembered: every
// test of the layout fails with it).
func (l *Layout) template(ctx context.Context) error {
	l.tmplMu.Lock()
	defer l.tmplMu.Unlock()
	if l.tmplOK {
		return nil
	}
	if l.tmplErr != nil {
		return l.tmplErr
	}
	stmt := "CREATE DATABASE " + templateDB + " OWNER postgres"
	if l.base != "" {
		stmt += " TEMPLATE " + l.base
	}
	createMu.Lock()
	err := l.adminExec(ctx, stmt)
	createMu.Unlock()
	if err == nil {
		err = db.Migrate(ctx, l.pg.URL(templateDB))
	}
	if err != nil {
		l.tmplErr = err
		return err
	}
	l.tmplOK = true
	return nil
}

// adminExec runs stmt as the cluster's superuser.
func (l *Layout) adminExec(ctx context.Context, stmt string) error {
	conn, err := pgx.Connect(ctx, l.pg.SuperURL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, stmt)
	return err
}

// TemporalDynamicConfig is the test dev server's configuration. Pollers are forgotten
// 5 s after their last poll and idle long polls return every 2 s, so that
// DescribeTaskQueue tells within seconds that a stopped worker no longer polls (by
// default a stopped poller stays listed for 5 minutes). The poll limit is raised so
// that tests running many workers in parallel never starve. DescribeTaskQueue's stats
// (the backlog) are cached for 500 ms instead of 5 s, so that a backlog test sees them
// move within a second.
var TemporalDynamicConfig = []string{
	`matching.PollerHistoryTTL="5s"`,
	`matching.longPollExpirationInterval="2s"`,
	`frontend.namespaceCount=10000`,
	`matching.TaskQueueInfoByBuildIdTTL="500ms"`,
}

// TemporalAddress is the shared dev server's address; the server starts on first use.
// Its default namespace has the service's search attributes (reconciler.SearchAttributes),
// as have the private servers' below.
func TemporalAddress(t testing.TB) string {
	t.Helper()
	temporalOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		temporal, temporalErr = devenv.StartTemporal(ctx, devenv.TemporalOptions{DynamicConfig: TemporalDynamicConfig, SearchAttributes: reconciler.SearchAttributes()})
		if temporalErr == nil {
			temporalErr = WaitTemporalReady(ctx, temporal.Address())
		}
	})
	if temporalErr != nil {
		t.Fatalf("testenv: temporal dev server: %v", temporalErr)
	}
	return temporal.Address()
}

// PrivateTemporal starts a dev server for t alone (to stop and restart it), with the
// test configuration plus extra dynamic config values (which replace the test
// configuration's values of the same keys). It is closed when t ends.
func PrivateTemporal(t testing.TB, extra ...string) *devenv.Temporal {
	t.Helper()
	return privateTemporal(t, false, extra)
}

// PersistentTemporal is PrivateTemporal with its state in a file: a Stop and Start
// keep every workflow, as a real Temporal's restart would.
func PersistentTemporal(t testing.TB, extra ...string) *devenv.Temporal {
	t.Helper()
	return privateTemporal(t, true, extra)
}

func privateTemporal(t testing.TB, persistent bool, extra []string) *devenv.Temporal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := devenv.StartTemporal(ctx, devenv.TemporalOptions{
		DynamicConfig: devenv.OverrideConfig(TemporalDynamicConfig, extra), Persistent: persistent, SearchAttributes: reconciler.SearchAttributes(),
	})
	if err != nil {
		t.Fatalf("testenv: private temporal dev server: %v", err)
	}
	t.Cleanup(srv.Close)
	if err := WaitTemporalReady(ctx, srv.Address()); err != nil {
		t.Fatalf("testenv: private temporal dev server: %v", err)
	}
	return srv
}

// PrivatePostgres starts a PostgreSQL cluster for t alone (to stop and restart it) and
// returns it with its migrated postgres database. It is removed when t ends.
func PrivatePostgres(t testing.TB) (*devenv.Postgres, *DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := devenv.StartPostgres(ctx)
	if err != nil {
		t.Fatalf("testenv: private postgres: %v", err)
	}
	t.Cleanup(p.Close)
	d := &DB{Name: "postgres", URL: p.URL("postgres"), Layout: &Layout{Name: "private", super: "postgres", pg: p}}
	if err := db.Migrate(ctx, d.URL); err != nil {
		t.Fatalf("testenv: migrate private postgres: %v", err)
	}
	if d.Pool, err = pgxpool.New(ctx, d.URL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Pool.Close)
	return p, d
}

// TemporalClient is a client of the shared dev server in the default namespace,
// closed when t ends.
func TemporalClient(t testing.TB) client.Client {
	t.Helper()
	return TemporalClientOf(t, TemporalAddress(t))
}

// TemporalClientOf is a client of the dev server at address, closed when t ends.
func TemporalClientOf(t testing.TB, address string) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{HostPort: address, Logger: quietLogger{}})
	if err != nil {
		t.Fatalf("testenv: temporal client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// WaitTemporalReady waits until the frontend answers and the default namespace exists.
func WaitTemporalReady(ctx context.Context, address string) error {
	var last error
	for ctx.Err() == nil {
		c, err := client.Dial(client.Options{HostPort: address, Logger: quietLogger{}})
		if err == nil {
			_, err = c.WorkflowService().DescribeNamespace(ctx, describeDefault())
			c.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready: %v", last)
}
