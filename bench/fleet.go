package main

// Fleet-wide figures: 1,000 projects started and stopped at once, idle cost.

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
)

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

// liveAndLeased counts the projects among ids with a live row, and with a lease still
// held.
func (b *bench) liveAndLeased(ctx context.Context, ids []uuid.UUID) (live, leased int, err error) {
	err = b.pool.QueryRow(ctx, `
		SELECT (SELECT count(DISTINCT project_id) FROM workflow_workers WHERE project_id = ANY($1) AND status IN ('starting', 'running', 'stopping')),
		       (SELECT count(*) FROM project_leases WHERE project_id = ANY($1) AND owner IS NOT NULL AND expires_at > now())`, ids).Scan(&live, &leased)
	return live, leased, err
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
	var ups, downs, rowsStopped []time.Duration
	upCPU := map[string]time.Duration{} // CPU used during the mass starts, by process
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
		cpu0 := processCPU()
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
		for k, v := range processCPU() {
			upCPU[k] += v - cpu0[k]
		}
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
		rowsDone := time.Duration(0)
		if err := waitFor(ctx, 2*time.Minute, 5*time.Millisecond, func() (bool, error) {
			live, leased, err := b.liveAndLeased(ctx, ids)
			if live == 0 && rowsDone == 0 {
				rowsDone = time.Since(t0)
			}
			return live == 0 && leased == 0, err
		}); err != nil {
			return err
		}
		downs = append(downs, time.Since(t0))
		rowsStopped = append(rowsStopped, rowsDone)
	}
	// Every worker of the last fleet serves: a run on each of 20 projects spread over
	// the fleet completes (what DescribeTaskQueue lists after many stops and starts on
	// one queue is not a reliable sign).
	served, slowest := 0, time.Duration(0)
	for i := 0; i < 20; i++ {
		var queue string
		if err := b.pool.QueryRow(ctx, `SELECT task_queue_name FROM projects WHERE id = $1`, ids[i*n/20]).Scan(&queue); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		began := time.Now()
		run, err := b.tc.ExecuteWorkflow(rctx, client.StartWorkflowOptions{ID: "fleet-" + uuid.NewString(), TaskQueue: queue}, "labelled")
		if err == nil {
			err = run.Get(rctx, nil)
		}
		cancel()
		if err == nil {
			served++
			slowest = max(slowest, time.Since(began))
		}
	}
	b.add(row{
		figure: fmt.Sprintf("%d projects set running at once -> all running", n),
		median: ms(median(ups)), p99: "-", target: "<= 0.75 s, every worker serving",
		met:   yes(median(ups) <= 750*time.Millisecond && served == 20),
		floor: ms(time.Duration(n)*b.workerNext) + " (N x Start)", ratio: ratio(median(ups), time.Duration(n)*b.workerNext),
		note: fmt.Sprintf("%d runs (%s); a workflow run on each of 20 projects across the last fleet: %d of 20 completed (slowest %s); CPU used in the %d starts, %s of wall time on %d cores: the bench process (service and bench) %s, PostgreSQL %s, Temporal %s",
			len(ups), durations(ups), served, ms(slowest), len(ups), ms(sum(ups)), runtime.NumCPU(), ms(upCPU["bench"]), ms(upCPU["postgres"]), ms(upCPU["temporal"])),
	})
	b.add(row{
		figure: fmt.Sprintf("%d running projects stopped by desired_status -> every row stopped, every lease released", n),
		median: ms(median(downs)), p99: "-", target: "<= 2 s",
		met:   yes(median(downs) <= 2*time.Second),
		floor: "-", ratio: "-",
		note: fmt.Sprintf("%d runs (%s); every row stopped after %s", len(downs), durations(downs), durations(rowsStopped)),
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

	say("heartbeat and renewal statements, and the idle cost, with %d workers", n)
	if _, err := b.pool.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		return err
	}
	// One long-poll expiry: every idle poll returns once and is sent again in it, so the
	// request rate counts them (the workers started together and their polls expire
	// together: a shorter window sees none of them, or all).
	window := 60 * time.Second
	cpu0, req0, polls0 := cpuTime(), b.svcMetric("reconciler_temporal_requests_total"), b.svcMetric("reconciler_temporal_polls_total")
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(window):
	}
	cpu := cpuTime() - cpu0
	req, polls := b.svcMetric("reconciler_temporal_requests_total")-req0, b.svcMetric("reconciler_temporal_polls_total")-polls0
	var statements int64
	if err := b.pool.QueryRow(ctx, `SELECT coalesce(sum(calls), 0) FROM pg_stat_statements`).Scan(&statements); err != nil {
		return err
	}
	b.add(row{
		figure: fmt.Sprintf("idle cost of %d running projects (no workflow runs)", n),
		median: fmt.Sprintf("%.1f%% of a core, %.1f statements/s, %.1f Temporal requests/s", 100*cpu.Seconds()/window.Seconds(),
			float64(statements)/window.Seconds(), (req+polls)/window.Seconds()),
		p99: "-", target: "-", met: "-", floor: "-", ratio: "-",
		note: fmt.Sprintf("over %s: the service's CPU (the bench process, idle meanwhile), every statement of pg_stat_statements, %.0f long polls and %.0f other requests sent to Temporal (an idle long poll returns after the server's long-poll expiry, 60 s by default, and is sent again)",
			window, polls, req),
	})
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

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}
