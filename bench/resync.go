package main

// The resync poll with many projects and nothing changed.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/flowbuilder/reconciler/db"
)

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
