// Command bench measures every performance target of SPEC section 6 against a private
// PostgreSQL and Temporal dev server, next to the floors it cannot beat (a NOTIFY round
// trip on the same database, a bare SDK worker Start on the same server), and prints
// one table, also written to bench/results.md. `make bench` runs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

type options struct {
	runs     int
	projects int
	cycles   int
	compiles int
	total    int
	binary   string
	out      string
	profile  string
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 50, "samples of the single-project latency figures")
	flag.IntVar(&o.projects, "projects", 1000, "projects of the fleet-wide figures")
	flag.IntVar(&o.cycles, "cycles", 3, "repetitions of the fleet-wide figures")
	flag.IntVar(&o.compiles, "compiles", 20, "compiles under load")
	flag.IntVar(&o.total, "total", 10000, "projects in the database for the resync figure")
	flag.StringVar(&o.binary, "binary", "bin/reconciler", "the reconciler binary, for the SIGTERM figure")
	flag.StringVar(&o.out, "out", "bench/results.md", "where to write the results")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the first fleet start (the in-process service) to this file")
	flag.Parse()
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// row is one line of the results table.
type row struct {
	figure, median, p99, target, met, floor, ratio, note string
}

type bench struct {
	o        options
	pool     *pgxpool.Pool
	pg       *devenv.Postgres
	temporal *devenv.Temporal
	tc       client.Client
	svc      *reconciler.Reconciler
	svcPool  *pgxpool.Pool
	rows     []row
	notes    []string

	notifyRTT  time.Duration // floors
	workerFrst time.Duration
	workerNext time.Duration
}

func say(format string, args ...any) { fmt.Fprintf(os.Stderr, "· "+format+"\n", args...) }

func run(ctx context.Context, o options) error {
	began := time.Now()
	b := &bench{o: o}
	var err error
	say("starting PostgreSQL and the Temporal dev server")
	b.pg, err = devenv.StartPostgresWith(ctx, devenv.PostgresOptions{Settings: []string{
		"shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=top",
	}})
	if err != nil {
		return err
	}
	defer b.pg.Close()
	// Sized for o.projects workers (README, "Sizing Temporal"): concurrent polls per
	// namespace, and request rates high enough for all of them to start and stop at once.
	b.temporal, err = devenv.StartTemporal(ctx, devenv.TemporalOptions{DynamicConfig: []string{
		fmt.Sprintf("frontend.namespaceCount=%d", 4*o.projects+1000),
		fmt.Sprintf("frontend.rps=%d", 20*o.projects+2400),
		fmt.Sprintf("frontend.namespaceRPS=%d", 20*o.projects+2400),
	}})
	if err != nil {
		return err
	}
	defer b.temporal.Close()
	url := b.pg.URL("postgres")
	if err := db.Migrate(ctx, url); err != nil {
		return err
	}
	if b.pool, err = db.Connect(ctx, url, 20); err != nil {
		return err
	}
	defer b.pool.Close()
	if _, err := b.pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return err
	}
	if b.tc, err = dialTemporal(ctx, b.temporal.Address()); err != nil {
		return err
	}
	defer b.tc.Close()

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"floors", b.floors},
		{"service", b.startService},
		{"desired -> running", b.desiredToRunning},
		{"compile -> serving", b.compileToServing},
		{"fleet", b.fleet},
		{"resync", b.resync},
		{"sigterm", b.sigterm},
	}
	for _, s := range steps {
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	b.note(fmt.Sprintf("whole run: %s", time.Since(began).Round(time.Second)))
	return b.report(ctx)
}

func dialTemporal(ctx context.Context, address string) (client.Client, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := client.Dial(client.Options{HostPort: address, Logger: quiet{}})
		if err == nil {
			_, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: "default"})
			if err == nil {
				return c, nil
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("temporal not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// floors measures what no reconciler can beat on this machine.
func (b *bench) floors(ctx context.Context) error {
	say("floors: NOTIFY round trip, bare worker Start")
	conn, err := pgx.Connect(ctx, b.pg.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "LISTEN bench_floor"); err != nil {
		return err
	}
	var rtts []time.Duration
	for range 200 {
		t0 := time.Now()
		if _, err := b.pool.Exec(ctx, "SELECT pg_notify('bench_floor', 'x')"); err != nil {
			return err
		}
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		rtts = append(rtts, time.Since(t0))
	}
	b.notifyRTT = median(rtts)
	b.add(row{figure: "floor: NOTIFY round trip (same database)", median: ms(median(rtts)), p99: ms(p99(rtts)), target: "-", met: "-"})

	c, err := dialTemporal(ctx, b.temporal.Address())
	if err != nil {
		return err
	}
	defer c.Close()
	var starts []time.Duration
	for i := range 51 {
		w := worker.New(c, "floor-"+uuid.NewString(), worker.Options{MaxConcurrentWorkflowTaskPollers: 2, MaxConcurrentActivityTaskPollers: 1})
		w.RegisterWorkflowWithOptions(func(workflow.Context) error { return nil }, workflow.RegisterOptions{Name: "floor"})
		t0 := time.Now()
		if err := w.Start(); err != nil {
			return err
		}
		d := time.Since(t0)
		w.Stop()
		if i == 0 {
			b.workerFrst = d
			continue
		}
		starts = append(starts, d)
	}
	b.workerNext = median(starts)
	b.add(row{figure: "floor: bare SDK worker Start (client warm)", median: ms(median(starts)), p99: ms(p99(starts)), target: "-", met: "-",
		note: fmt.Sprintf("the first Start on a new client took %s (namespace round trip)", ms(b.workerFrst))})
	return nil
}

func (b *bench) startService(ctx context.Context) error {
	cfg := reconciler.DefaultConfig()
	cfg.DatabaseURL = b.pg.URL("postgres")
	cfg.TemporalAddress = b.temporal.Address()
	cfg.WorkflowPollers = 2
	cfg.ActivityPollers = 1
	cfg.Concurrency = 32
	cfg.DatabaseMaxConns = 40
	cfg.HeartbeatInterval = 2 * time.Second
	cfg.OpsAddr = "off"
	cfg.LogLevel = "warn"
	cfg.TemporalLogLevel = "error"
	if err := cfg.Validate(); err != nil {
		return err
	}
	var err error
	if b.svcPool, err = db.Connect(ctx, cfg.DatabaseURL, cfg.DatabaseMaxConns); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if b.svc, err = reconciler.New(cfg, b.svcPool, log); err != nil {
		return err
	}
	return b.svc.Start(ctx)
}

const labelled = `{"version": 1, "start": "a", "nodes": {
	"a": {"type": "activity", "activity": "echo", "input": "%s", "next": "r"},
	"r": {"type": "return", "value": "${nodes.a.output}"}}}`

// newProjects creates n stopped projects, each with one compiled, active workflow.
func (b *bench) newProjects(ctx context.Context, n int, withWorkflow bool) ([]uuid.UUID, error) {
	rows, err := b.pool.Query(ctx, `
		INSERT INTO projects (name, task_queue_name)
		SELECT 'bench-' || i, 'bench-' || gen_random_uuid() FROM generate_series(1, $1) i
		RETURNING id`, n)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil || !withWorkflow {
		return ids, err
	}
	_, err = b.pool.Exec(ctx, `
		WITH w AS (
			INSERT INTO workflows (project_id, name, status)
			SELECT id, 'labelled', 'active' FROM unnest($1::uuid[]) id
			RETURNING id)
		INSERT INTO compiled_workflows (workflow_id, workflow_code)
		SELECT id, $2 FROM w`, ids, fmt.Sprintf(labelled, "v1"))
	return ids, err
}

// waitFor polls cond until it holds; the wait is what the figure measures.
func waitFor(ctx context.Context, timeout, every time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

func (b *bench) latest(ctx context.Context, id uuid.UUID) (status, worker string, generation int64, err error) {
	err = b.pool.QueryRow(ctx, `
		SELECT status, worker_id, coalesce(generation, 0) FROM workflow_workers
		WHERE project_id = $1 ORDER BY started_at DESC, id DESC LIMIT 1`, id).Scan(&status, &worker, &generation)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", 0, nil
	}
	return status, worker, generation, err
}

func (b *bench) setDesired(ctx context.Context, ids []uuid.UUID, status string) (time.Time, error) {
	_, err := b.pool.Exec(ctx, `UPDATE projects SET desired_status = $2 WHERE id = ANY($1)`, ids, status)
	return time.Now(), err
}

// desiredToRunning: desired_status = 'running' committed -> row running, worker polling.
func (b *bench) desiredToRunning(ctx context.Context) error {
	say("desired -> running: %d runs", b.o.runs)
	ids, err := b.newProjects(ctx, b.o.runs, true)
	if err != nil {
		return err
	}
	var lat []time.Duration
	polling := 0
	for i, id := range ids {
		t0, err := b.setDesired(ctx, []uuid.UUID{id}, "running")
		if err != nil {
			return err
		}
		var workerID string
		if err := waitFor(ctx, 30*time.Second, 200*time.Microsecond, func() (bool, error) {
			s, w, _, err := b.latest(ctx, id)
			workerID = w
			return s == "running", err
		}); err != nil {
			return fmt.Errorf("project %d: %w", i, err)
		}
		lat = append(lat, time.Since(t0))
		if i%10 == 0 { // the worker really polls: Temporal lists it
			queue := ""
			_ = b.pool.QueryRow(ctx, `SELECT task_queue_name FROM projects WHERE id = $1`, id).Scan(&queue)
			if err := waitFor(ctx, 10*time.Second, 10*time.Millisecond, func() (bool, error) {
				return b.pollerListed(ctx, queue, workerID), nil
			}); err == nil {
				polling++
			}
		}
		if _, err := b.setDesired(ctx, []uuid.UUID{id}, "stopped"); err != nil {
			return err
		}
		if err := waitFor(ctx, 30*time.Second, time.Millisecond, func() (bool, error) {
			s, _, _, err := b.latest(ctx, id)
			return s == "stopped", err
		}); err != nil {
			return err
		}
	}
	floor := b.notifyRTT + b.workerNext
	b.add(row{
		figure: "desired_status='running' committed -> row running, worker polling",
		median: ms(median(lat)), p99: ms(p99(lat)), target: "p50 <= 10 ms, p99 <= 50 ms",
		met:   yes(median(lat) <= 10*time.Millisecond && p99(lat) <= 50*time.Millisecond),
		floor: ms(floor) + " (NOTIFY + Start)", ratio: ratio(median(lat), floor),
		note: fmt.Sprintf("%d runs; %d of %d sampled workers seen polling by Temporal", len(lat), polling, (len(ids)+9)/10),
	})
	return nil
}

func (b *bench) pollerListed(ctx context.Context, queue, identity string) bool {
	resp, err := b.tc.DescribeTaskQueue(ctx, queue, enumspb.TASK_QUEUE_TYPE_WORKFLOW)
	if err != nil {
		return false
	}
	for _, p := range resp.GetPollers() {
		if p.GetIdentity() == identity {
			return true
		}
	}
	return false
}

// compileToServing: compiles land while workflows run in a loop.
func (b *bench) compileToServing(ctx context.Context) error {
	say("compile -> serving: %d compiles under load", b.o.compiles)
	ids, err := b.newProjects(ctx, 1, true)
	if err != nil {
		return err
	}
	id := ids[0]
	var queue string
	var wf uuid.UUID
	if err := b.pool.QueryRow(ctx, `SELECT p.task_queue_name, w.id FROM projects p JOIN workflows w ON w.project_id = p.id WHERE p.id = $1`, id).Scan(&queue, &wf); err != nil {
		return err
	}
	if _, err := b.setDesired(ctx, ids, "running"); err != nil {
		return err
	}
	var first string
	if err := waitFor(ctx, 30*time.Second, time.Millisecond, func() (bool, error) {
		s, w, _, err := b.latest(ctx, id)
		first = w
		return s == "running", err
	}); err != nil {
		return err
	}

	// The load: workflows started and awaited in a loop by 4 clients.
	var mu sync.Mutex
	var runIDs []string
	failedRuns := 0
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				run, err := b.tc.ExecuteWorkflow(loadCtx, client.StartWorkflowOptions{ID: "load-" + uuid.NewString(), TaskQueue: queue}, "labelled")
				if err != nil {
					continue
				}
				var out string
				err = run.Get(context.Background(), &out)
				mu.Lock()
				runIDs = append(runIDs, run.GetID())
				if err != nil {
					failedRuns++
				}
				mu.Unlock()
			}
		}()
	}
	var lat []time.Duration
	for v := 2; v <= b.o.compiles+1; v++ {
		time.Sleep(100 * time.Millisecond) // let runs start on the version being replaced
		var gen int64
		if err := b.pool.QueryRow(ctx, `SELECT generation FROM projects WHERE id = $1`, id).Scan(&gen); err != nil {
			stopLoad()
			return err
		}
		if _, err := b.pool.Exec(ctx, `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, $2)`, wf, fmt.Sprintf(labelled, fmt.Sprintf("v%d", v))); err != nil {
			stopLoad()
			return err
		}
		t0 := time.Now() // committed: the compile bumped the generation by one
		if err := waitFor(ctx, 30*time.Second, 200*time.Microsecond, func() (bool, error) {
			_, _, g, err := b.latest(ctx, id)
			return g > gen, err
		}); err != nil {
			stopLoad()
			return err
		}
		lat = append(lat, time.Since(t0))
	}
	time.Sleep(200 * time.Millisecond)
	stopLoad()
	wg.Wait()

	failedTasks := 0
	for _, rid := range runIDs {
		it := b.tc.GetWorkflowHistory(ctx, rid, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				return err
			}
			if e.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_FAILED {
				failedTasks++
			}
		}
	}
	_, last, _, _ := b.latest(ctx, id)
	replaced := "no"
	if last != first {
		replaced = "yes"
	}
	b.add(row{
		figure: "compile committed -> new definition serving (observed generation = desired)",
		median: ms(median(lat)), p99: ms(p99(lat)), target: "p99 <= 50 ms, no failed workflow task, no polling gap",
		met:   yes(p99(lat) <= 50*time.Millisecond && failedTasks == 0 && failedRuns == 0 && replaced == "no"),
		floor: ms(b.notifyRTT) + " (NOTIFY)", ratio: ratio(median(lat), b.notifyRTT),
		note: fmt.Sprintf("%d compiles while %d runs executed: %d failed workflow tasks, %d failed runs, worker replaced: %s (pollers never stopped)",
			len(lat), len(runIDs), failedTasks, failedRuns, replaced),
	})
	_, err = b.setDesired(ctx, ids, "stopped")
	return err
}

// memory is the service's heap and stacks in use, after collections, and its goroutines.
func memory() (bytes uint64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse, runtime.NumGoroutine()
}

func (b *bench) runningCount(ctx context.Context, ids []uuid.UUID) (int, error) {
	var n int
	err := b.pool.QueryRow(ctx, `
		SELECT count(DISTINCT project_id) FROM workflow_workers
		WHERE status = 'running' AND project_id = ANY($1)`, ids).Scan(&n)
	return n, err
}

func (b *bench) settle(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
}

// fleet: N projects at once, idle cost at 100 and N, heartbeat statements.
func (b *bench) fleet(ctx context.Context) error {
	n := b.o.projects
	ids, err := b.newProjects(ctx, n, true)
	if err != nil {
		return err
	}
	b.settle(ctx)
	mem0, gor0 := memory()

	say("idle cost at 100 projects")
	if _, err := b.setDesired(ctx, ids[:100], "running"); err != nil {
		return err
	}
	if err := waitFor(ctx, time.Minute, 10*time.Millisecond, func() (bool, error) {
		c, err := b.runningCount(ctx, ids[:100])
		return c == 100, err
	}); err != nil {
		return err
	}
	b.settle(ctx)
	mem100, gor100 := memory()
	if _, err := b.setDesired(ctx, ids[:100], "stopped"); err != nil {
		return err
	}
	if err := waitFor(ctx, time.Minute, 10*time.Millisecond, func() (bool, error) {
		c, err := b.runningCount(ctx, ids[:100])
		return c == 0, err
	}); err != nil {
		return err
	}

	say("%d projects set running at once, %d times", n, b.o.cycles)
	var ups, downs []time.Duration
	for c := 0; c < b.o.cycles; c++ {
		if c == 0 && b.o.profile != "" {
			f, err := os.Create(b.o.profile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
		}
		t0, err := b.setDesired(ctx, ids, "running")
		if err != nil {
			return err
		}
		if err := waitFor(ctx, 2*time.Minute, 5*time.Millisecond, func() (bool, error) {
			c, err := b.runningCount(ctx, ids)
			return c == n, err
		}); err != nil {
			return fmt.Errorf("%d projects did not all run: %w", n, err)
		}
		ups = append(ups, time.Since(t0))
		if c == 0 && b.o.profile != "" {
			pprof.StopCPUProfile()
		}
		if c == b.o.cycles-1 {
			break // keep the last fleet running for the next figures
		}
		t0, err = b.setDesired(ctx, ids, "stopped")
		if err != nil {
			return err
		}
		if err := waitFor(ctx, 2*time.Minute, 5*time.Millisecond, func() (bool, error) {
			c, err := b.runningCount(ctx, ids)
			return c == 0, err
		}); err != nil {
			return err
		}
		downs = append(downs, time.Since(t0))
	}
	polling := 0
	for _, id := range ids[:10] {
		var queue, workerID string
		_ = b.pool.QueryRow(ctx, `SELECT p.task_queue_name, w.worker_id FROM projects p JOIN workflow_workers w ON w.project_id = p.id AND w.status = 'running' WHERE p.id = $1`, id).Scan(&queue, &workerID)
		if waitFor(ctx, 10*time.Second, 20*time.Millisecond, func() (bool, error) { return b.pollerListed(ctx, queue, workerID), nil }) == nil {
			polling++
		}
	}
	b.add(row{
		figure: fmt.Sprintf("%d projects set running at once -> all running", n),
		median: ms(median(ups)), p99: "-", target: "<= 3 s",
		met:   yes(median(ups) <= 3*time.Second),
		floor: ms(time.Duration(n)*b.workerNext) + " (N x Start)", ratio: ratio(median(ups), time.Duration(n)*b.workerNext),
		note: fmt.Sprintf("%d runs (%s); stopping them all by desired_status took %s; 10 of 10 sampled workers seen polling: %v",
			len(ups), durations(ups), durations(downs), polling == 10),
	})

	say("idle cost at %d projects", n)
	b.settle(ctx)
	memN, gorN := memory()
	perMem := float64(memN-mem100) / float64(n-100)
	perGor := float64(gorN-gor100) / float64(n-100)
	at100Mem := float64(mem100-mem0) / 100
	at100Gor := float64(gor100-gor0) / 100
	b.add(row{
		figure: "idle worker cost per project (heap + stacks, goroutines)",
		median: fmt.Sprintf("%.2f MB, %.1f goroutines", perMem/1e6, perGor), p99: "-",
		target: "<= 0.5 MB, <= 25 goroutines",
		met:    yes(perMem <= 0.5e6 && perGor <= 25 && at100Mem <= 0.5e6 && at100Gor <= 25),
		floor:  "-", ratio: "-",
		note: fmt.Sprintf("from 100 to %d projects; from 0 to 100: %.2f MB, %.1f goroutines; totals %.0f / %.0f / %.0f MB and %d / %d / %d goroutines at 0 / 100 / %d",
			n, at100Mem/1e6, at100Gor, float64(mem0)/1e6, float64(mem100)/1e6, float64(memN)/1e6, gor0, gor100, gorN, n),
	})

	say("heartbeat and renewal statements with %d workers", n)
	if _, err := b.pool.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		return err
	}
	window := 10 * time.Second
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(window):
	}
	var heartbeats, renewals int64
	if err := b.pool.QueryRow(ctx, `SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%SET last_heartbeat = now()%FROM project_leases%'`).Scan(&heartbeats); err != nil {
		return err
	}
	if err := b.pool.QueryRow(ctx, `SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%INSERT INTO reconciler_replicas%'`).Scan(&renewals); err != nil {
		return err
	}
	perInterval := float64(heartbeats) / (window.Seconds() / 2)
	b.add(row{
		figure: fmt.Sprintf("heartbeat writes with %d workers", n),
		median: fmt.Sprintf("%.1f statements per interval", perInterval), p99: "-",
		target: "one statement per replica per interval",
		met:    yes(perInterval > 0.5 && perInterval <= 1.5),
		floor:  "-", ratio: "-",
		note: fmt.Sprintf("pg_stat_statements over %s: %d heartbeat statements (2 s interval), %d lease renewals (1 s interval, also one statement)",
			window, heartbeats, renewals),
	})
	return nil
}

// resync: the poll's query with the database holding o.total projects.
func (b *bench) resync(ctx context.Context) error {
	var have int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM projects`).Scan(&have); err != nil {
		return err
	}
	if have < b.o.total {
		if _, err := b.newProjects(ctx, b.o.total-have, false); err != nil {
			return err
		}
	}
	if _, err := b.pool.Exec(ctx, "ANALYZE projects"); err != nil {
		return err
	}
	say("resync with %d projects", b.o.total)
	var exec, trip []time.Duration
	q := db.New(b.pool)
	for range 30 {
		var plan []map[string]any
		var raw []byte
		if err := b.pool.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) SELECT id, desired_status, generation FROM projects`).Scan(&raw); err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &plan); err != nil {
			return err
		}
		msTime, _ := plan[0]["Execution Time"].(float64)
		exec = append(exec, time.Duration(msTime*float64(time.Millisecond)))
		t0 := time.Now()
		states, err := q.ListProjectStates(ctx)
		if err != nil {
			return err
		}
		trip = append(trip, time.Since(t0))
		if len(states) < b.o.total {
			return fmt.Errorf("resync read %d projects", len(states))
		}
	}
	b.add(row{
		figure: fmt.Sprintf("resync poll, %d projects, nothing changed: database time", b.o.total),
		median: ms(median(exec)), p99: ms(p99(exec)), target: "<= 20 ms",
		met:   yes(p99(exec) <= 20*time.Millisecond),
		floor: "-", ratio: "-",
		note: fmt.Sprintf("server execution time (EXPLAIN ANALYZE) of the one resync query; with transfer and decoding in Go, the round trip is %s median", ms(median(trip))),
	})
	return nil
}

// sigterm: the binary runs o.projects workers and gets SIGTERM.
func (b *bench) sigterm(ctx context.Context) error {
	say("stopping the in-process service (%d workers)", b.o.projects)
	t0 := time.Now()
	b.svc.Stop()
	inProcess := time.Since(t0)
	b.svcPool.Close()
	bin, err := filepath.Abs(b.o.binary)
	if err != nil {
		return err
	}
	var running []uuid.UUID
	rows, err := b.pool.Query(ctx, `SELECT id FROM projects WHERE desired_status = 'running'`)
	if err != nil {
		return err
	}
	if running, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID]); err != nil {
		return err
	}
	var exits []time.Duration
	for c := 0; c < b.o.cycles; c++ {
		say("SIGTERM with %d workers, run %d of %d", len(running), c+1, b.o.cycles)
		replica := fmt.Sprintf("bench-%d", c)
		cmd := exec.Command(bin, "run")
		cmd.Env = append(os.Environ(),
			"DATABASE_URL="+b.pg.URL("postgres"), "TEMPORAL_ADDRESS="+b.temporal.Address(),
			"RECONCILER_REPLICA_ID="+replica, "RECONCILER_WORKFLOW_POLLERS=2", "RECONCILER_ACTIVITY_POLLERS=1",
			"RECONCILER_CONCURRENCY=32", "RECONCILER_DATABASE_MAX_CONNS=40", "RECONCILER_OPS_ADDR=off",
			"RECONCILER_LOG_LEVEL=info", "RECONCILER_TEMPORAL_LOG_LEVEL=error")
		var logs strings.Builder
		cmd.Stdout, cmd.Stderr = io.Discard, &logs
		if err := cmd.Start(); err != nil {
			return err
		}
		if err := waitFor(ctx, 2*time.Minute, 10*time.Millisecond, func() (bool, error) {
			var n int
			err := b.pool.QueryRow(ctx, `SELECT count(*) FROM workflow_workers WHERE status = 'running' AND replica_id = $1`, replica).Scan(&n)
			return n == len(running), err
		}); err != nil {
			_ = cmd.Process.Kill()
			return fmt.Errorf("the binary did not run every project: %w", err)
		}
		t0 := time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return err
		}
		err := cmd.Wait()
		exits = append(exits, time.Since(t0))
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "reconciler stopped") {
				say("  %s", line)
			}
		}
		if err != nil {
			return fmt.Errorf("exit after SIGTERM: %w", err)
		}
		var live int
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM workflow_workers WHERE status <> 'stopped' AND replica_id = $1`, replica).Scan(&live); err != nil {
			return err
		}
		if live != 0 {
			return fmt.Errorf("%d rows not stopped after SIGTERM", live)
		}
	}
	b.add(row{
		figure: fmt.Sprintf("SIGTERM with %d running workers -> process exit", len(running)),
		median: ms(median(exits)), p99: "-", target: "<= 5 s",
		met:   yes(median(exits) <= 5*time.Second),
		floor: "-", ratio: "-",
		note: fmt.Sprintf("the built binary, %d runs (%s), exit code 0, every row stopped and every lease released; the same drain in-process took %s",
			len(exits), durations(exits), ms(inProcess)),
	})
	return nil
}

func (b *bench) add(r row) { b.rows = append(b.rows, r) }

func (b *bench) note(s string) { b.notes = append(b.notes, s) }

// report prints the table and writes results.md.
func (b *bench) report(ctx context.Context) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "| figure | median | p99 | target | met | floor | x floor |\n|---|---|---|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %s |\n", r.figure, r.median, r.p99, r.target, r.met, dash(r.floor), dash(r.ratio))
	}
	table := sb.String()
	fmt.Println()
	fmt.Print(table)
	fmt.Println()
	for _, r := range b.rows {
		if r.note != "" {
			fmt.Printf("- %s: %s\n", r.figure, r.note)
		}
	}

	var pgVersion string
	_ = b.pool.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion)
	var md strings.Builder
	fmt.Fprintf(&md, "# Benchmark results\n\n`make bench` on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&md, "Machine: %s, %d CPUs, %s RAM; %s; PostgreSQL %s (fsync off, private cluster); Temporal dev server (CLI v1.5.1, `frontend.namespaceCount` raised); "+
		"the service in-process with 2 workflow and 1 activity pollers per worker, `RECONCILER_CONCURRENCY=32`, except the SIGTERM figure (the built binary).\n\n",
		cpuModel(), runtime.NumCPU(), memTotal(), runtime.Version(), pgVersion)
	md.WriteString(table)
	md.WriteString("\n")
	for _, r := range b.rows {
		if r.note != "" {
			fmt.Fprintf(&md, "- **%s**: %s\n", r.figure, r.note)
		}
	}
	for _, n := range b.notes {
		fmt.Fprintf(&md, "- %s\n", n)
	}
	if err := os.WriteFile(b.o.out, []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwritten to %s\n", b.o.out)
	for _, r := range b.rows {
		if r.met == "no" {
			return fmt.Errorf("target missed: %s", r.figure)
		}
	}
	return nil
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }
func p99(d []time.Duration) time.Duration    { return quantile(d, 0.99) }

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration{}, d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i]
}

func ms(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func durations(d []time.Duration) string {
	parts := make([]string, len(d))
	for i, x := range d {
		parts[i] = ms(x)
	}
	return strings.Join(parts, ", ")
}

func ratio(d, floor time.Duration) string {
	if floor <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", float64(d)/float64(floor))
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			return strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			var kb int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:")), "%d", &kb)
			return fmt.Sprintf("%.0f GiB", float64(kb)/1024/1024)
		}
	}
	return "?"
}

type quiet struct{}

func (quiet) Debug(string, ...any) {}
func (quiet) Info(string, ...any)  {}
func (quiet) Warn(string, ...any)  {}
func (quiet) Error(string, ...any) {}
