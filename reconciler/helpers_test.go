package reconciler_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	rdb "github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/fixture"
	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// service is a reconciler under test, on its own database and the shared dev server.
type service struct {
	*reconciler.Reconciler
	cfg  reconciler.Config
	db   *testenv.DB
	pool *pgxpool.Pool
}

func testConfig(t testing.TB, db *testenv.DB) reconciler.Config {
	cfg := reconciler.DefaultConfig()
	cfg.DatabaseURL = db.URL
	cfg.TemporalAddress = testenv.TemporalAddress(t)
	cfg.PollInterval = 10 * time.Second
	cfg.HeartbeatInterval = time.Second
	cfg.Concurrency = 8
	cfg.WorkerStopTimeout = 5 * time.Second
	cfg.ShutdownTimeout = 20 * time.Second
	cfg.MaxNodeExecutions = 1000
	cfg.HTTPAllowPrivate = true
	cfg.ComponentTimeout = 2 * time.Second
	cfg.TemporalLogLevel = "error"
	cfg.PollFailureThreshold = time.Second
	cfg.ListenerPingInterval = time.Second
	cfg.ListenerPingTimeout = 2 * time.Second
	cfg.StaleAfter = 5 * time.Second
	cfg.OpsAddr = "off"
	return cfg
}

func startService(t testing.TB, db *testenv.DB, modify ...func(*reconciler.Config)) *service {
	t.Helper()
	return startServiceLogging(t, db, testLogger(t), modify...)
}

// startServiceLogging is startService with the service's logs going to log.
func startServiceLogging(t testing.TB, db *testenv.DB, log *slog.Logger, modify ...func(*reconciler.Config)) *service {
	t.Helper()
	cfg := testConfig(t, db)
	for _, m := range modify {
		m(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	poolCfg, err := rdb.PoolConfig(cfg.DatabaseURL, cfg.DatabaseMaxConns)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), poolCfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := reconciler.New(cfg, pool, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := &service{Reconciler: r, cfg: cfg, db: db, pool: db.Pool}
	t.Cleanup(func() {
		r.Stop()
		pool.Close()
	})
	return s
}

// testLogger writes the service's logs to the test log, and to nowhere once the test
// has ended (late lines from stopping workers must not panic).
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("RECONCILER_TEST_LOGS") == "" {
		return slog.New(slog.NewTextHandler(discard{}, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func exec(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", strings.TrimSpace(sql), err)
	}
}

// must fails t on err.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// project creates a stopped project and returns its id and task queue.
func project(t testing.TB, pool *pgxpool.Pool) (uuid.UUID, string) {
	t.Helper()
	p, err := fixture.NewProject(context.Background(), pool, t.Name())
	must(t, err)
	return p.ID, p.TaskQueue
}

// workflow creates an active workflow with one compiled version and returns its id.
func workflow(t testing.TB, pool *pgxpool.Pool, projectID uuid.UUID, name, code string) uuid.UUID {
	t.Helper()
	ids, err := fixture.NewWorkflow(context.Background(), pool, name, code, projectID)
	must(t, err)
	return ids[0]
}

// compile stores a new compiled version of a workflow.
func compile(t testing.TB, pool *pgxpool.Pool, workflowID uuid.UUID, code string) {
	t.Helper()
	must(t, fixture.Compile(context.Background(), pool, workflowID, code))
}

func setDesired(t testing.TB, pool *pgxpool.Pool, projectID uuid.UUID, status string) {
	t.Helper()
	_, err := fixture.SetDesired(context.Background(), pool, status, projectID)
	must(t, err)
}

func generation(t testing.TB, pool *pgxpool.Pool, projectID uuid.UUID) int64 {
	t.Helper()
	g, err := fixture.Generation(context.Background(), pool, projectID)
	must(t, err)
	return g
}

// workerRow is the newest workflow_workers row of a project.
type workerRow = fixture.Worker

func latestWorker(t testing.TB, pool *pgxpool.Pool, projectID uuid.UUID) (workerRow, bool) {
	t.Helper()
	w, ok, err := fixture.LatestWorker(context.Background(), pool, projectID)
	must(t, err)
	return w, ok
}

// waitWorker waits until the project's newest row satisfies cond.
func waitWorker(t testing.TB, pool *pgxpool.Pool, projectID uuid.UUID, timeout time.Duration, cond func(workerRow) bool) workerRow {
	t.Helper()
	var last workerRow
	testenv.Eventually(t, timeout, func() (bool, string) {
		r, ok := latestWorker(t, pool, projectID)
		if !ok {
			return false, "no workflow_workers row yet"
		}
		last = r
		return cond(r), fmt.Sprintf("newest row: %+v", r)
	})
	return last
}

func hasStatus(status string) func(workerRow) bool {
	return func(r workerRow) bool { return r.Status == status }
}

// execute runs a workflow type on a task queue and decodes its result.
func execute(t testing.TB, tc client.Client, queue, workflowType string, input any, result any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        workflowType + "-" + uuid.NewString(),
		TaskQueue: queue,
	}, workflowType, input)
	if err != nil {
		t.Fatalf("start %s: %v", workflowType, err)
	}
	return run.Get(ctx, result)
}
