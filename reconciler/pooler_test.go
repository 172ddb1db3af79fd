package reconciler_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// pooled starts a PgBouncer in pool mode mode in front of the package's cluster.
func pooled(t *testing.T, mode string) *devenv.PgBouncer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := devenv.StartPgBouncer(ctx, testenv.Postgres(), mode)
	if err != nil {
		t.Fatalf("pgbouncer: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// Behind PgBouncer the service works: in session mode as it is, in transaction mode
// (Supabase's pooled URL) with the listener on a direct connection. A change then
// arrives by notification: the resync is ten minutes away and a listener that did not
// deliver would take the ping timeout (20 s) to notice.
func TestServiceBehindPgBouncer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, mode   string
		directListen bool
	}{
		{"session mode", "session", false},
		{"transaction mode with a direct listen connection", "transaction", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testenv.Database(t)
			temporal := testenv.TemporalClient(t)
			bouncer := pooled(t, tc.mode)
			svc := startService(t, db, func(c *reconciler.Config) {
				c.DatabaseURL = bouncer.URL("postgres", db.Name)
				if tc.directListen {
					c.ListenDatabaseURL = db.URL
				}
				c.PollInterval = 10 * time.Minute
				c.ListenerPingInterval = time.Minute
				c.ListenerPingTimeout = 20 * time.Second
			})
			testenv.Eventually(t, 30*time.Second, func() (bool, string) {
				return svc.ListenerDelivers(), "the listener has not received its first ping"
			})

			id, queue := project(t, db.Pool)
			workflow(t, db.Pool, id, "greet", greetV1)
			began := time.Now()
			setDesired(t, db.Pool, id, "running")
			waitWorker(t, db.Pool, id, 5*time.Second, hasStatus("running"))
			t.Logf("desired -> running in %s through PgBouncer (%s)", time.Since(began).Round(time.Millisecond), tc.mode)

			var out string
			if err := execute(t, temporal, queue, "greet", map[string]any{"name": "pooled"}, &out); err != nil || out != "Hello, pooled!" {
				t.Fatalf("greet: %q, %v", out, err)
			}
			// Rows, heartbeats and leases keep being written through the pooler.
			first, _ := latestWorker(t, db.Pool, id)
			waitWorker(t, db.Pool, id, 10*time.Second, func(r workerRow) bool {
				return r.LastHeartbeat != nil && first.LastHeartbeat != nil && r.LastHeartbeat.After(*first.LastHeartbeat)
			})
			setDesired(t, db.Pool, id, "stopped")
			waitWorker(t, db.Pool, id, 10*time.Second, hasStatus("stopped"))
			if p := svc.ListenerProblem(); p != "" {
				t.Errorf("listener problem reported: %s", p)
			}
		})
	}
}

// With DATABASE_URL through a transaction-mode pooler and no listen connection, the
// service says why changes are slow and how to fix it: in /readyz, in its replica row
// (which `reconciler status` prints) and in the log; and it keeps working through its
// resyncs.
func TestTransactionPoolerWithoutListenURLIsReported(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	bouncer := pooled(t, "transaction")
	svc := startService(t, db, func(c *reconciler.Config) {
		c.DatabaseURL = bouncer.URL("postgres", db.Name)
		c.PollInterval = 2 * time.Second
	})
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		return svc.ListenerProblem() != "", "no listener problem reported yet"
	})
	problem := svc.ListenerProblem()
	for _, want := range []string{"RECONCILER_LISTEN_DATABASE_URL", "transaction-mode pooler", "port 6543"} {
		if !strings.Contains(problem, want) {
			t.Errorf("the problem does not say %q: %s", want, problem)
		}
	}
	if checks, ready := svc.Ready(context.Background()); ready || checks["listener"] != problem {
		t.Errorf("/readyz: ready=%v, listener check %q; want not ready with the problem", ready, checks["listener"])
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		var stored string
		err := db.Pool.QueryRow(context.Background(), `SELECT coalesce(problem, '') FROM reconciler_replicas`).Scan(&stored)
		return err == nil && stored == problem, "reconciler_replicas.problem is " + stored
	})

	// It still reconciles, by resync.
	id, _ := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
}
