package reconciler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// Postgres stopped for 10 s while projects run: workers keep polling (workflows
// started through Temporal during the outage complete), and a change made right after
// the restart is applied.
func TestPostgresOutageNeverStopsWorkers(t *testing.T) {
	t.Parallel()
	pg, db := testenv.PrivatePostgres(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)

	a, qa := project(t, db.Pool)
	workflow(t, db.Pool, a, "greet", greetV1)
	b, qb := project(t, db.Pool)
	workflow(t, db.Pool, b, "greet", greetV1)
	setDesired(t, db.Pool, a, "running")
	before := waitWorker(t, db.Pool, a, 30*time.Second, hasStatus("running"))

	pg.Stop()
	down := time.Now()
	runs := 0
	for time.Since(down) < 10*time.Second {
		var out string
		if err := execute(t, tc, qa, "greet", map[string]any{"name": "outage"}, &out); err != nil || out != "Hello, outage!" {
			t.Fatalf("run %d during the outage: %q, %v", runs+1, out, err)
		}
		runs++
	}
	t.Logf("%d runs completed while Postgres was down for %s", runs, time.Since(down).Round(time.Second))
	if err := pg.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	up := time.Now()

	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		_, err := db.Pool.Exec(context.Background(), `UPDATE projects SET desired_status = 'running' WHERE id = $1`, b)
		return err == nil, fmt.Sprint(err)
	})
	waitWorker(t, db.Pool, b, 30*time.Second, hasStatus("running"))
	var out string
	if err := execute(t, tc, qb, "greet", map[string]any{"name": "after"}, &out); err != nil || out != "Hello, after!" {
		t.Fatalf("project started after the outage: %q, %v", out, err)
	}
	after := waitWorker(t, db.Pool, a, 30*time.Second, func(r workerRow) bool {
		return r.LastHeartbeat != nil && r.LastHeartbeat.After(up)
	})
	if after.WorkerID != before.WorkerID || after.Status != "running" {
		t.Fatalf("project a's worker went from %s to %s (%s): the outage must not stop it", before.WorkerID, after.WorkerID, after.Status)
	}
}

// The listener's connection is cut and a change is made before it can reconnect: the
// resync that every reconnect runs applies it, long before the periodic poll. The
// listener goes through a proxy (RECONCILER_LISTEN_DATABASE_URL) so that the test
// decides when it may reconnect.
func TestListenerReconnectResyncs(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	// Made before the service starts, so that no notification of theirs is in flight
	// (a reconcile they queued would read the change below: level-triggered).
	id, _ := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	proxy := testenv.StartProxy(t, fmt.Sprintf("127.0.0.1:%d", testenv.Postgres().Port()))
	svc := startService(t, db, func(c *reconciler.Config) {
		c.PollInterval = time.Hour
		c.ListenDatabaseURL = fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", proxy.Addr(), db.Name)
	})
	// The listener delivers once its start-up resync is done, which found nothing to do.
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return svc.ListenerDelivers(), "the listener does not deliver yet"
	})

	proxy.Cut()
	setDesired(t, db.Pool, id, "running")
	// Nothing applies it while the listener is cut off (the poll is an hour away)...
	time.Sleep(500 * time.Millisecond) // a bounded look for something that must not happen
	if r, ok := latestWorker(t, db.Pool, id); ok {
		t.Fatalf("the change applied while the listener was cut off (row %s): the test does not exercise the resync", r.Status)
	}
	// ...and the reconnect's resync does.
	proxy.Restore(t)
	waitWorker(t, db.Pool, id, 15*time.Second, hasStatus("running"))
}

// The Temporal dev server is killed and restarted: rows show the outage, a worker that
// could not poll at all is failed rather than running, and everything returns to
// running and executes again.
func TestTemporalOutageShowsInRowsAndRecovers(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	srv := testenv.PrivateTemporal(t)
	tc := testenv.TemporalClientOf(t, srv.Address())
	startService(t, db, func(c *reconciler.Config) { c.TemporalAddress = srv.Address() })

	a, qa := project(t, db.Pool)
	workflow(t, db.Pool, a, "greet", greetV1)
	setDesired(t, db.Pool, a, "running")
	before := waitWorker(t, db.Pool, a, 30*time.Second, hasStatus("running"))
	var out string
	if err := execute(t, tc, qa, "greet", map[string]any{"name": "before"}, &out); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	outage := waitWorker(t, db.Pool, a, 30*time.Second, func(r workerRow) bool { return r.Metadata["poll_error"] != nil })
	if outage.Status != "running" || outage.WorkerID != before.WorkerID {
		t.Errorf("during the outage the worker row is %s/%s; want the same worker, still running, with poll_error", outage.WorkerID, outage.Status)
	}
	t.Logf("row during the outage: poll_error=%v", outage.Metadata["poll_error"])

	b, qb := project(t, db.Pool)
	workflow(t, db.Pool, b, "greet", greetV1)
	setDesired(t, db.Pool, b, "running")
	failed := waitWorker(t, db.Pool, b, 30*time.Second, hasStatus("failed"))
	if failed.Metadata["error"] == nil || failed.Metadata["next_retry_at"] == nil {
		t.Errorf("failed row of a worker that never polled lacks error or next_retry_at: %v", failed.Metadata)
	}

	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testenv.WaitTemporalReady(ctx, srv.Address()); err != nil {
		t.Fatal(err)
	}
	waitWorker(t, db.Pool, a, 60*time.Second, func(r workerRow) bool {
		return r.Status == "running" && r.Metadata["poll_error"] == nil
	})
	waitWorker(t, db.Pool, b, 60*time.Second, hasStatus("running"))
	for _, q := range []string{qa, qb} {
		if err := execute(t, tc, q, "greet", map[string]any{"name": "again"}, &out); err != nil || out != "Hello, again!" {
			t.Fatalf("after the outage, %s: %q, %v", q, out, err)
		}
	}
}

// Temporal restarts (a persistent dev server, down for 5 s): a workflow started right
// after it answers again completes within 3 s. Left to the SDK, the worker would poll
// again only after its backoff (up to 10 s) and the connection's (up to 10 s more).
func TestTemporalRestartWorkersPollAgainAtOnce(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	srv := testenv.PersistentTemporal(t)
	tc := testenv.TemporalClientOf(t, srv.Address())
	startService(t, db, func(c *reconciler.Config) { c.TemporalAddress = srv.Address() })
	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	var out string
	if err := execute(t, tc, queue, "greet", map[string]any{"name": "before"}, &out); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool { return r.Metadata["poll_error"] != nil })
	time.Sleep(5 * time.Second) // the outage lasts: the SDK's and the connection's backoffs grow
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testenv.WaitTemporalReady(ctx, srv.Address()); err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer rcancel()
	run, err := tc.ExecuteWorkflow(rctx, client.StartWorkflowOptions{ID: "after-restart-" + uuid.NewString(), TaskQueue: queue}, "greet", map[string]any{"name": "after"})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Get(rctx, &out); err != nil || out != "Hello, after!" {
		t.Fatalf("a workflow started as Temporal answered again: %q, %v after %s", out, err, time.Since(answered).Round(time.Millisecond))
	}
	t.Logf("completed %s after Temporal answered again", time.Since(answered).Round(time.Millisecond))
}

// Every connection of the service is terminated at once (a failover, a pooler
// restart): the listener's reconnect resync must not fail on the pool's dead
// connections and leave the change below to the next poll. It applies within 2 s.
func TestEveryConnectionTerminatedThenAChangeApplies(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	login := "svc_" + db.Name
	exec(t, db.Pool, `CREATE ROLE `+login+` LOGIN IN ROLE reconciler_service`)
	t.Cleanup(func() { _, _ = db.Pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+login) })
	id, _ := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	svc := startService(t, db, func(c *reconciler.Config) {
		c.DatabaseURL = db.URLAs(login)
		c.PollInterval = time.Hour
	})
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return svc.ListenerDelivers(), "the listener does not deliver yet"
	})
	var killed int
	if err := db.Pool.QueryRow(context.Background(), `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE usename = $1 AND datname = current_database()`, login).Scan(&killed); err != nil || killed < 2 {
		t.Fatalf("terminated %d connections of the service (%v); want the listener's and the pool's", killed, err)
	}
	changed := time.Now()
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 2*time.Second, hasStatus("running"))
	t.Logf("%d connections terminated; the change applied in %s", killed, time.Since(changed).Round(time.Millisecond))
}

// failedRows are a project's failed workflow_workers rows, oldest first.
func failedRows(t *testing.T, db *testenv.DB, id uuid.UUID) []workerRow {
	rows, err := db.Pool.Query(context.Background(), `
		SELECT worker_id, status, stopped_at, metadata FROM workflow_workers
		WHERE project_id = $1 AND status = 'failed' ORDER BY started_at`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []workerRow
	for rows.Next() {
		var r workerRow
		var md []byte
		if err := rows.Scan(&r.WorkerID, &r.Status, &r.StoppedAt, &md); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(md, &r.Metadata)
		out = append(out, r)
	}
	return out
}

// A project whose worker keeps failing (here: Temporal refuses its task queue name) is
// failed with a growing backoff and a restart count; another project is unaffected.
func TestCrashLoopBacksOffAndSparesOtherProjects(t *testing.T) {
	t.Parallel()
	host, _ := os.Hostname()
	limit := max(60, len(host)+40) // worker identities and workflow ids stay under it
	srv := testenv.PrivateTemporal(t, fmt.Sprintf("limit.maxIDLength=%d", limit))
	tc := testenv.TemporalClientOf(t, srv.Address())
	db := testenv.Database(t)
	startService(t, db, func(c *reconciler.Config) { c.TemporalAddress = srv.Address() })

	bad, _ := project(t, db.Pool)
	exec(t, db.Pool, `UPDATE projects SET task_queue_name = $2 WHERE id = $1`, bad, "crash-"+strings.Repeat("x", limit))
	workflow(t, db.Pool, bad, "greet", greetV1)
	good, qg := project(t, db.Pool)
	workflow(t, db.Pool, good, "greet", greetV1)
	setDesired(t, db.Pool, bad, "running")
	setDesired(t, db.Pool, good, "running")
	healthy := waitWorker(t, db.Pool, good, 30*time.Second, hasStatus("running"))

	var failures []workerRow
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		failures = failedRows(t, db, bad)
		return len(failures) >= 3, fmt.Sprintf("%d failed rows", len(failures))
	})
	delay := func(r workerRow) time.Duration {
		next, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r.Metadata["next_retry_at"]))
		if err != nil || r.StoppedAt == nil {
			t.Fatalf("failed row without next_retry_at: %v", r.Metadata)
		}
		return next.Sub(*r.StoppedAt)
	}
	for i, r := range failures[:3] {
		if got := r.Metadata["restarts"]; got != float64(i+1) {
			t.Errorf("failed row %d: restarts = %v, want %d", i+1, got, i+1)
		}
		if msg := fmt.Sprint(r.Metadata["error"]); !strings.Contains(msg, "InvalidArgument") {
			t.Errorf("failed row %d: error %q does not carry Temporal's refusal", i+1, msg)
		}
	}
	if d1, d3 := delay(failures[0]), delay(failures[2]); d3 <= d1 {
		t.Errorf("backoff did not grow: first delay %s, third %s", d1, d3)
	} else {
		t.Logf("backoff: first retry after %s, third after %s", d1.Round(time.Millisecond), d3.Round(time.Millisecond))
	}

	now, _ := latestWorker(t, db.Pool, good)
	if now.WorkerID != healthy.WorkerID || now.Status != "running" {
		t.Fatalf("the healthy project's worker went from %s to %s (%s)", healthy.WorkerID, now.WorkerID, now.Status)
	}
	var out string
	if err := execute(t, tc, qg, "greet", map[string]any{"name": "neighbour"}, &out); err != nil || out != "Hello, neighbour!" {
		t.Fatalf("healthy project: %q, %v", out, err)
	}
}

// SIGTERM while an activity that takes 2 s is in flight: the activity completes (not
// cancelled, not retried), all rows end stopped, the process exits 0; the run finishes
// on the next worker.
func TestSIGTERMDrainsInFlightActivities(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	var requests, completed atomic.Int32
	arrived := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		arrived <- struct{}{}
		<-time.After(2 * time.Second) // the in-flight work the drain must wait for
		fmt.Fprint(w, "slow answer")
		completed.Add(1)
	}))
	defer slow.Close()

	proc := testenv.StartProcess(t, testenv.ServiceEnv(t, db, "RECONCILER_WORKER_STOP_TIMEOUT=10s"), "run")
	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "slow", `{"version": 1, "start": "h", "nodes": {
		"h": {"type": "activity", "activity": "http.request", "input": {"url": "`+slow.URL+`"}, "next": "r"},
		"r": {"type": "return", "value": "${nodes.h.output.body}"}}}`)
	other, _ := project(t, db.Pool)
	workflow(t, db.Pool, other, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	setDesired(t, db.Pool, other, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	waitWorker(t, db.Pool, other, 30*time.Second, hasStatus("running"))

	ctx := context.Background()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "slow-" + uuid.NewString(), TaskQueue: queue}, "slow", nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the activity never reached the server")
	}
	signalled := time.Now()
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := proc.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("exited %s after SIGTERM", time.Since(signalled).Round(time.Millisecond))
	if completed.Load() != 1 {
		t.Fatalf("the in-flight request did not complete before exit")
	}
	var live int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM workflow_workers WHERE status <> 'stopped'`).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != 0 {
		t.Fatalf("%d workflow_workers rows are not stopped after SIGTERM", live)
	}
	if !historyHas(t, tc, run.GetID(), enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) {
		t.Fatal("the activity's completion was not recorded before the process exited")
	}

	startService(t, db)
	var out string
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := run.Get(wctx, &out); err != nil || out != "slow answer" {
		t.Fatalf("the run after restart: %q, %v", out, err)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("the activity ran %d times, want once (drained, not retried)", n)
	}
}

// Rows orphaned by a kill -9 of the service are closed on the next start, never reused.
func TestKill9OrphansAreClosedOnTheNextStart(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	proc := testenv.StartProcess(t, testenv.ServiceEnv(t, db), "run")
	id, _ := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	killed := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	proc.Wait(t, 10*time.Second)
	if r, _ := latestWorker(t, db.Pool, id); r.Status != "running" || r.WorkerID != killed.WorkerID {
		t.Fatalf("after kill -9 the row is %+v; the test expects it left running", r)
	}

	startService(t, db)
	fresh := waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool {
		return r.Status == "running" && r.WorkerID != killed.WorkerID
	})
	var status, reason string
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT status, coalesce(metadata->>'error', '') FROM workflow_workers WHERE worker_id = $1`, killed.WorkerID).Scan(&status, &reason); err != nil {
		t.Fatal(err)
	}
	if status != "failed" || !strings.Contains(reason, "is gone") {
		t.Fatalf("the orphaned row is %s (%q); want failed with the reason", status, reason)
	}
	if fresh.ProcessID == killed.ProcessID {
		t.Fatalf("new worker claims the dead process id %s", fresh.ProcessID)
	}
}
