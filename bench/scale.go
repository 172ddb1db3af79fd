package main

// How far one replica goes: o.scale projects on the built binary.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flowbuilder/reconciler/internal/devenv"
)

// scale runs o.scale projects (idle workers) on one replica, the built binary, and
// reports the time to all running and what they cost: the process's resident memory,
// heap, goroutines, database connections and the long polls it holds on Temporal.
func (b *bench) scale(ctx context.Context) error {
	n := b.o.scale
	if n <= 0 {
		return nil
	}
	var have int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM projects`).Scan(&have); err != nil {
		return err
	}
	if n > have {
		if _, err := b.newProjects(ctx, n-have, true); err != nil {
			return err
		}
	}
	if _, err := b.pool.Exec(ctx, `
		UPDATE projects SET desired_status = CASE WHEN id IN (SELECT id FROM projects ORDER BY id LIMIT $1) THEN 'running' ELSE 'stopped' END`, n); err != nil {
		return err
	}
	say("%d projects on one replica", n)
	bin, err := filepath.Abs(b.o.binary)
	if err != nil {
		return err
	}
	port, err := devenv.FreePort()
	if err != nil {
		return err
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	cmd := exec.Command(bin, "run")
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+b.pg.URL("postgres"), "TEMPORAL_ADDRESS="+b.temporal.Address(),
		"RECONCILER_REPLICA_ID=bench-scale", "RECONCILER_WORKFLOW_POLLERS=2", "RECONCILER_ACTIVITY_POLLERS=1",
		"RECONCILER_CONCURRENCY=128", "RECONCILER_DATABASE_MAX_CONNS=40", fmt.Sprintf("RECONCILER_OPS_ADDR=127.0.0.1:%d", port),
		fmt.Sprintf("RECONCILER_POLLER_BUDGET=%d", 4*n), fmt.Sprintf("RECONCILER_MAX_PROJECTS=%d", n),
		"RECONCILER_METRICS_PROJECT_LABELS=false", "RECONCILER_LOG_LEVEL=warn", "RECONCILER_TEMPORAL_LOG_LEVEL=error")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &logs
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	if err := waitFor(ctx, 5*time.Minute, 20*time.Millisecond, func() (bool, error) {
		var running int
		err := b.pool.QueryRow(ctx, `SELECT count(*) FROM workflow_workers WHERE status = 'running' AND replica_id = 'bench-scale'`).Scan(&running)
		return running == n, err
	}); err != nil {
		return fmt.Errorf("%d projects did not all run on one replica: %w\n%s", n, err, logs.String())
	}
	allRunning := time.Since(began)
	b.settle(ctx)
	b.settle(ctx)
	rss := processRSS(cmd.Process.Pid)
	heap := scrapeMetric(metricsURL, "go_memstats_heap_inuse_bytes")
	goroutines := scrapeMetric(metricsURL, "go_goroutines")
	polls := scrapeMetric(metricsURL, "reconciler_temporal_polls_held")
	var conns int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('reconciler', 'reconciler-listener')`).Scan(&conns); err != nil {
		return err
	}
	b.add(row{
		figure: fmt.Sprintf("%d projects on one replica -> all running", n),
		median: ms(allRunning), p99: "-", target: "-", met: "-", floor: "-", ratio: "-",
		note: fmt.Sprintf("the built binary with 2 workflow and 1 activity pollers per worker; then, idle: %.0f MB resident (%.2f MB per project), heap %.0f MB (%.2f MB per project), %.0f goroutines (%.1f per project), %d database connections (pool of 40 and the listener), %.0f long polls held on Temporal (frontend.namespaceCount raised to %d)",
			float64(rss)/1e6, float64(rss)/1e6/float64(n), heap/1e6, heap/1e6/float64(n), goroutines, goroutines/float64(n), conns, polls, b.namespaceCount),
	})
	return nil
}

// processRSS is a process's resident memory in bytes, from /proc.
func processRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
