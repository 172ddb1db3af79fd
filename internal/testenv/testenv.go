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
	"strings"
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
)

var (
	pg *devenv.Postgres

	templateOnce sync.Once
	templateErr  error
	createMu     sync.Mutex // CREATE DATABASE ... TEMPLATE wants the template to itself
	dbSeq        atomic.Int64

	temporalOnce sync.Once
	temporal     *devenv.Temporal
	temporalErr  error
)

const templateDB = "reconciler_template"

// Main starts PostgreSQL, runs the package's tests, stops what was started, checks that
// no goroutine leaked and exits.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	p, err := devenv.StartPostgres(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	pg = p
	code := m.Run()
	if temporal != nil {
		temporal.Close()
	}
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	pg.Close()
	if code == 0 {
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: goroutines leaked:", err)
			return 1
		}
	}
	return code
}

// leakOptions ignores goroutines of libraries that end asynchronously after Close.
func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	}
}

// Postgres is the package's cluster (for tests that need a new database of their own
// shape, or the cluster's port).
func Postgres() *devenv.Postgres { return pg }

// DB is a test's own database.
type DB struct {
	Name string
	URL  string
	Pool *pgxpool.Pool
}

// URLAs is the connection string of the database for another login role (the test
// cluster trusts local connections, so no password is needed).
func (d *DB) URLAs(user string) string {
	return strings.Replace(d.URL, "postgres://postgres@", "postgres://"+user+"@", 1)
}

// Database creates a migrated database for t, dropped when t ends.
func Database(t testing.TB) *DB {
	t.Helper()
	return database(t, true)
}

// EmptyDatabase creates a database without any migration, dropped when t ends.
func EmptyDatabase(t testing.TB) *DB {
	t.Helper()
	return database(t, false)
}

func database(t testing.TB, migrated bool) *DB {
	t.Helper()
	if pg == nil {
		t.Fatal("testenv: call testenv.Main from TestMain")
	}
	ctx := context.Background()
	if migrated {
		templateOnce.Do(func() { templateErr = createTemplate(ctx) })
		if templateErr != nil {
			t.Fatalf("testenv: template database: %v", templateErr)
		}
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), dbSeq.Add(1))
	stmt := "CREATE DATABASE " + name
	if migrated {
		stmt += " TEMPLATE " + templateDB
	}
	createMu.Lock()
	err := adminExec(ctx, stmt)
	createMu.Unlock()
	if err != nil {
		t.Fatalf("testenv: %s: %v", stmt, err)
	}
	d := &DB{Name: name, URL: pg.URL(name)}
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
		_ = adminExec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return d
}

func createTemplate(ctx context.Context) error {
	if err := adminExec(ctx, "CREATE DATABASE "+templateDB); err != nil {
		return err
	}
	return db.Migrate(ctx, pg.URL(templateDB))
}

func adminExec(ctx context.Context, stmt string) error {
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
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
// that tests running many workers in parallel never starve.
var TemporalDynamicConfig = []string{
	`matching.PollerHistoryTTL="5s"`,
	`matching.longPollExpirationInterval="2s"`,
	`frontend.namespaceCount=10000`,
}

// TemporalAddress is the shared dev server's address; the server starts on first use.
func TemporalAddress(t testing.TB) string {
	t.Helper()
	temporalOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		temporal, temporalErr = devenv.StartTemporal(ctx, devenv.TemporalOptions{DynamicConfig: TemporalDynamicConfig})
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
// test configuration plus extra dynamic config values. It is closed when t ends.
func PrivateTemporal(t testing.TB, extra ...string) *devenv.Temporal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := devenv.StartTemporal(ctx, devenv.TemporalOptions{DynamicConfig: append(append([]string{}, TemporalDynamicConfig...), extra...)})
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
	d := &DB{Name: "postgres", URL: p.URL("postgres")}
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
