package main

// Single-project latencies: desired -> running, compile -> serving.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
)

// desiredToRunning: desired_status = 'running' committed -> row running, worker polling.
func (b *bench) desiredToRunning(ctx context.Context) error {
	say("desired -> running: %d runs", b.o.runs)
	// One more project than runs: the first start is the process's first worker start,
	// which pays for what the service does once (the namespace lookup, the first
	// connections); it is reported apart.
	ids, err := b.newProjects(ctx, b.o.runs+1, true)
	if err != nil {
		return err
	}
	var lat []time.Duration
	var first time.Duration
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
		if i == 0 {
			first = time.Since(t0)
		} else {
			lat = append(lat, time.Since(t0))
		}
		if i%10 == 1 { // the worker really polls: Temporal lists it
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
		note: fmt.Sprintf("%d runs after the process's first worker start (%s, not counted); %d of %d sampled workers seen polling by Temporal", len(lat), ms(first), polling, (len(lat)+9)/10),
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
