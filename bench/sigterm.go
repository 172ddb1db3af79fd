package main

// SIGTERM of the built binary with every worker running.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

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
	var exits, starts []time.Duration
	for c := 0; c < b.o.cycles; c++ {
		say("SIGTERM with %d workers, run %d of %d", len(running), c+1, b.o.cycles)
		replica := fmt.Sprintf("bench-%d", c)
		cmd := exec.Command(bin, "run")
		cmd.Env = append(os.Environ(),
			"DATABASE_URL="+b.pg.URL("postgres"), "TEMPORAL_ADDRESS="+b.temporal.Address(),
			"RECONCILER_REPLICA_ID="+replica, "RECONCILER_WORKFLOW_POLLERS=2", "RECONCILER_ACTIVITY_POLLERS=1",
			"RECONCILER_CONCURRENCY=128", "RECONCILER_DATABASE_MAX_CONNS=40", "RECONCILER_OPS_ADDR=off",
			"RECONCILER_LOG_LEVEL=info", "RECONCILER_TEMPORAL_LOG_LEVEL=error")
		var logs strings.Builder
		cmd.Stdout, cmd.Stderr = io.Discard, &logs
		began := time.Now()
		if err := cmd.Start(); err != nil {
			return err
		}
		if err := waitFor(ctx, 2*time.Minute, 5*time.Millisecond, func() (bool, error) {
			var n int
			err := b.pool.QueryRow(ctx, `SELECT count(*) FROM workflow_workers WHERE status = 'running' AND replica_id = $1`, replica).Scan(&n)
			return n == len(running), err
		}); err != nil {
			_ = cmd.Process.Kill()
			return fmt.Errorf("the binary did not run every project: %w", err)
		}
		starts = append(starts, time.Since(began))
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
		figure: fmt.Sprintf("a replica started with %d projects to run -> all running", len(running)),
		median: ms(median(starts)), p99: "-", target: "<= 1 s from process start",
		met:   yes(median(starts) <= time.Second),
		floor: "-", ratio: "-",
		note: fmt.Sprintf("the built binary, %d runs (%s), from exec to every row running (the leases were released by the previous replica's SIGTERM)",
			len(starts), durations(starts)),
	})
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
