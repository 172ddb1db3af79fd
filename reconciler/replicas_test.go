package reconciler_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/fixture"
	"github.com/flowbuilder/reconciler/internal/testenv"
)

// startReplica runs the built binary as replica name. extra environment entries win
// over the defaults (DATABASE_URL=... to go through a proxy).
func startReplica(t *testing.T, db *testenv.DB, name string, extra ...string) *testenv.Process {
	t.Helper()
	env := testenv.ServiceEnv(t, db, append([]string{"RECONCILER_REPLICA_ID=" + name, "RECONCILER_LOG_LEVEL=info"}, extra...)...)
	return testenv.StartProcess(t, env, "run")
}

// fleetOf creates n projects (no workflows: an idle worker is enough) and returns
// their ids and task queues.
func fleetOf(t *testing.T, db *testenv.DB, n int) ([]uuid.UUID, map[uuid.UUID]string) {
	t.Helper()
	ps, err := fixture.NewProjects(context.Background(), db.Pool, "replicated", n)
	must(t, err)
	queues := map[uuid.UUID]string{}
	for _, p := range ps {
		queues[p.ID] = p.TaskQueue
	}
	return fixture.IDs(ps), queues
}

// live returns, per project, the replicas with a live (starting or running) worker row.
func live(t *testing.T, db *testenv.DB, ids []uuid.UUID) map[uuid.UUID][]string {
	rows, err := db.Pool.Query(context.Background(), `
		SELECT project_id, array_agg(DISTINCT replica_id ORDER BY replica_id)
		FROM workflow_workers
		WHERE status IN ('starting', 'running') AND project_id = ANY($1)
		GROUP BY project_id`, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[uuid.UUID][]string{}
	for rows.Next() {
		var id uuid.UUID
		var replicas []string
		if err := rows.Scan(&id, &replicas); err != nil {
			t.Fatal(err)
		}
		out[id] = replicas
	}
	return out
}

// runningOn waits until every project has exactly one live worker, on a replica
// accepted by ok, and returns the split.
func runningOn(t *testing.T, db *testenv.DB, ids []uuid.UUID, timeout time.Duration, ok func(replica string) bool) map[string][]uuid.UUID {
	t.Helper()
	var split map[string][]uuid.UUID
	testenv.Eventually(t, timeout, func() (bool, string) {
		l := live(t, db, ids)
		split = map[string][]uuid.UUID{}
		for _, id := range ids {
			if len(l[id]) != 1 || !ok(l[id][0]) {
				var owner string
				var expires time.Time
				_ = db.Pool.QueryRow(context.Background(), `SELECT coalesce(owner, '-'), expires_at FROM project_leases WHERE project_id = $1`, id).Scan(&owner, &expires)
				return false, fmt.Sprintf("project %s runs on %v; lease owner %s expires %s (now %s)", id, l[id], owner, expires.Format(time.StampMilli), time.Now().Format(time.StampMilli))
			}
			split[l[id][0]] = append(split[l[id][0]], id)
		}
		return true, ""
	})
	return split
}

// overlapSampler looks every 100 ms at the rows (never two replicas live for one
// project) and at Temporal's pollers of the task queues, round robin. Each worker
// instance polls under its own identity (<replica>-<hex>); the span between the first
// and the last access Temporal reports for it is when it served. Spans of different
// replicas for one project may overlap by at most pollOverlapBound: a stopped worker's
// cancelled poll requests can still be on the wire (README, "Several replicas").
// pollOverlapBound is the documented bound on two replicas' pollers of one project
// overlapping: cancelled poll requests of a stopped worker reaching Temporal late.
const pollOverlapBound = 100 * time.Millisecond

type overlapSampler struct {
	t      *testing.T
	db     *testenv.DB
	tc     client.Client
	ids    []uuid.UUID
	queues map[uuid.UUID]string

	mu      sync.Mutex
	rowBad  []string
	spans   map[uuid.UUID]map[string][2]time.Time // project -> identity -> first, last access
	samples int
	stop    chan struct{}
	done    chan struct{}
}

func sampleOverlaps(t *testing.T, db *testenv.DB, tc client.Client, ids []uuid.UUID, queues map[uuid.UUID]string) *overlapSampler {
	s := &overlapSampler{t: t, db: db, tc: tc, ids: ids, queues: queues,
		spans: map[uuid.UUID]map[string][2]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *overlapSampler) run() {
	defer close(s.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	next := 0
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		rows, err := s.db.Pool.Query(context.Background(), `
			SELECT project_id, count(DISTINCT replica_id), string_agg(DISTINCT replica_id, ',')
			FROM workflow_workers
			WHERE status IN ('starting', 'running') AND project_id = ANY($1)
			GROUP BY project_id HAVING count(DISTINCT replica_id) > 1`, s.ids)
		if err == nil {
			for rows.Next() {
				var id uuid.UUID
				var n int
				var replicas string
				if rows.Scan(&id, &n, &replicas) == nil {
					s.mu.Lock()
					s.rowBad = append(s.rowBad, fmt.Sprintf("%s live on %s at %s", id, replicas, time.Now().Format(time.StampMilli)))
					s.mu.Unlock()
				}
			}
			rows.Close()
		}
		for range 10 {
			id := s.ids[next%len(s.ids)]
			next++
			resp, err := s.tc.DescribeTaskQueue(context.Background(), s.queues[id], enumspb.TASK_QUEUE_TYPE_WORKFLOW)
			if err != nil {
				continue
			}
			s.mu.Lock()
			if s.spans[id] == nil {
				s.spans[id] = map[string][2]time.Time{}
			}
			for _, p := range resp.GetPollers() {
				at := p.GetLastAccessTime().AsTime()
				span, ok := s.spans[id][p.GetIdentity()]
				if !ok {
					span = [2]time.Time{at, at}
				}
				if at.Before(span[0]) {
					span[0] = at
				}
				if at.After(span[1]) {
					span[1] = at
				}
				s.spans[id][p.GetIdentity()] = span
			}
			s.samples++
			s.mu.Unlock()
		}
	}
}

// finish stops sampling and reports overlaps.
func (s *overlapSampler) finish() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, bad := range s.rowBad {
		s.t.Errorf("two replicas' rows live at once: %s", bad)
	}
	replicaOf := func(identity string) string { return identity[:strings.LastIndex(identity, "-")] }
	worst := time.Duration(0)
	for id, spans := range s.spans {
		identities := make([]string, 0, len(spans))
		for identity := range spans {
			identities = append(identities, identity)
		}
		sort.Strings(identities)
		for i, a := range identities {
			for _, b := range identities[i+1:] {
				if replicaOf(a) == replicaOf(b) {
					continue
				}
				sa, sb := spans[a], spans[b]
				end, begin := sa[1], sa[0]
				if sb[1].Before(end) {
					end = sb[1]
				}
				if sb[0].After(begin) {
					begin = sb[0]
				}
				overlap := end.Sub(begin)
				if overlap > worst {
					worst = overlap
				}
				if overlap > pollOverlapBound {
					s.t.Errorf("project %s polled by %s (%s..%s) and %s (%s..%s) at once for %s", id,
						a, sa[0].Format(time.StampMilli), sa[1].Format(time.StampMilli),
						b, sb[0].Format(time.StampMilli), sb[1].Format(time.StampMilli), overlap)
				}
			}
		}
	}
	s.t.Logf("%d poller samples and %d row samples checked; largest overlap of two replicas' pollers %s (bound %s)", s.samples, s.samples/10, worst, pollOverlapBound)
}

// Three replicas share 60 projects evenly; a kill -9 moves a replica's projects
// within 15 s, a SIGTERM within 2 s; no project is ever served by two replicas.
func TestReplicasShareProjectsAndFailOver(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	ids, queues := fleetOf(t, db, 60)
	procs := map[string]*testenv.Process{}
	for _, name := range []string{"r1", "r2", "r3"} {
		procs[name] = startReplica(t, db, name)
	}
	exec(t, db.Pool, `UPDATE projects SET desired_status = 'running' WHERE id = ANY($1)`, ids)

	split := runningOn(t, db, ids, 60*time.Second, func(string) bool { return true })
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		split = runningOn(t, db, ids, 30*time.Second, func(string) bool { return true })
		for _, name := range []string{"r1", "r2", "r3"} {
			if n := len(split[name]); n < 14 || n > 26 {
				return false, fmt.Sprintf("split %d/%d/%d", len(split["r1"]), len(split["r2"]), len(split["r3"]))
			}
		}
		return true, ""
	})
	t.Logf("60 projects split %d/%d/%d", len(split["r1"]), len(split["r2"]), len(split["r3"]))

	sampler := sampleOverlaps(t, db, tc, ids, queues)

	// kill -9: its projects run elsewhere once its leases expire.
	victims := split["r1"]
	killed := time.Now()
	if err := procs["r1"].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs["r1"].Wait(t, 10*time.Second)
	runningOn(t, db, victims, 30*time.Second, func(r string) bool { return r != "r1" })
	if took := time.Since(killed); took > 15*time.Second {
		t.Errorf("after kill -9 of r1, its %d projects took %s to run elsewhere (want <= 15s)", len(victims), took.Round(time.Millisecond))
	} else {
		t.Logf("after kill -9 of r1, its %d projects ran elsewhere within %s", len(victims), took.Round(time.Millisecond))
	}

	// SIGTERM: leases are released as workers stop; the successor starts at once.
	split = runningOn(t, db, ids, 30*time.Second, func(r string) bool { return r == "r2" || r == "r3" })
	victims = split["r2"]
	signalled := time.Now()
	if err := procs["r2"].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	runningOn(t, db, victims, 30*time.Second, func(r string) bool { return r == "r3" })
	if took := time.Since(signalled); took > 2*time.Second {
		t.Errorf("after SIGTERM of r2, its %d projects took %s to run on r3 (want <= 2s)", len(victims), took.Round(time.Millisecond))
	} else {
		t.Logf("after SIGTERM of r2, its %d projects ran on r3 within %s", len(victims), took.Round(time.Millisecond))
	}
	if code := procs["r2"].Wait(t, 30*time.Second); code != 0 {
		t.Errorf("r2 exited %d after SIGTERM", code)
	}
	// Let the sampler see the last handoffs' pollers settle.
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		sampler.mu.Lock()
		defer sampler.mu.Unlock()
		return sampler.samples > 600, "sampling"
	})
	sampler.finish()
}

// A replica cut off from the database stops its workers before its leases can be
// taken over, and what it writes once it is back is rejected.
func TestPartitionedReplicaStopsBeforeTakeover(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	ids, queues := fleetOf(t, db, 10)
	proxy := testenv.StartProxy(t, strings.TrimPrefix(strings.Split(db.URL, "/")[2], "postgres@"))
	startReplica(t, db, "a")
	startReplica(t, db, "c", "DATABASE_URL="+strings.Replace(db.URL, strings.Split(db.URL, "/")[2], "postgres@"+proxy.Addr(), 1))
	exec(t, db.Pool, `UPDATE projects SET desired_status = 'running' WHERE id = ANY($1)`, ids)
	var split map[string][]uuid.UUID
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		split = runningOn(t, db, ids, 30*time.Second, func(string) bool { return true })
		return len(split["a"]) > 0 && len(split["c"]) > 0, fmt.Sprintf("split a=%d c=%d", len(split["a"]), len(split["c"]))
	})
	// Both replicas know of each other (so both fence) before the cut.
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		var n int
		_ = db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM reconciler_replicas WHERE fences AND replica_id IN ('a', 'c')`).Scan(&n)
		return n == 2, fmt.Sprintf("%d of 2 replicas fence", n)
	})
	split = runningOn(t, db, ids, 30*time.Second, func(string) bool { return true })
	cut := split["c"]
	if len(cut) == 0 {
		t.Fatal("the replica to cut off runs no project")
	}
	sampler := sampleOverlaps(t, db, tc, ids, queues)

	proxy.Cut()
	cutAt := time.Now()
	runningOn(t, db, cut, 40*time.Second, func(r string) bool { return r == "a" })
	t.Logf("%d projects of the cut-off replica ran on a after %s", len(cut), time.Since(cutAt).Round(time.Millisecond))
	var takenAt time.Time
	if err := db.Pool.QueryRow(context.Background(), `SELECT now()`).Scan(&takenAt); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Pool.Query(context.Background(), `
		SELECT worker_id, status, coalesce(metadata->>'error', ''), last_heartbeat
		FROM workflow_workers WHERE replica_id = 'c' AND project_id = ANY($1)`, cut)
	if err != nil {
		t.Fatal(err)
	}
	type closedRow struct {
		status, reason string
		heartbeat      *time.Time
	}
	before := map[string]closedRow{}
	for rows.Next() {
		var id string
		var r closedRow
		if err := rows.Scan(&id, &r.status, &r.reason, &r.heartbeat); err != nil {
			t.Fatal(err)
		}
		before[id] = r
	}
	rows.Close()

	// Back on the network: c rejoins, gets projects again (so its row writer has run),
	// and its late writes for the old workers were refused.
	proxy.Restore(t)
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		var n int
		_ = db.Pool.QueryRow(context.Background(), `
			SELECT count(*) FROM workflow_workers WHERE replica_id = 'c' AND status = 'running' AND started_at > $1`, takenAt).Scan(&n)
		return n > 0, "c runs no new worker yet"
	})
	for id, old := range before {
		var now closedRow
		if err := db.Pool.QueryRow(context.Background(),
			`SELECT status, coalesce(metadata->>'error', ''), last_heartbeat FROM workflow_workers WHERE worker_id = $1`, id).
			Scan(&now.status, &now.reason, &now.heartbeat); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(old.reason, "lease taken over by a") || now.status != old.status || now.reason != old.reason {
			t.Errorf("c's old worker %s: %s (%q) at takeover, %s (%q) after c came back; want it closed by a and left alone", id, old.status, old.reason, now.status, now.reason)
		}
		if old.heartbeat != nil && now.heartbeat != nil && now.heartbeat.After(*old.heartbeat) {
			t.Errorf("c's late heartbeat reached its old worker row %s", id)
		}
	}
	sampler.finish()
}
