package main

// Floors: what no reconciler can beat on this machine.

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

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
