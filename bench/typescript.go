package main

// TypeScript workflow code (SPEC 4b and section 6): compile -> serving of a 300-line
// module, the first workflow task of a new run, memory per cached run, and runs per
// second of one three-activity workflow in JSON, TypeScript and native Go.

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// threeActivitiesJSON and threeActivitiesTS are the same workflow: three echo
// activities in a row, returning the last output.
const threeActivitiesJSON = `{"version": 1, "start": "a", "nodes": {
	"a": {"type": "activity", "activity": "echo", "input": "${input}", "timeout": "10s", "next": "b"},
	"b": {"type": "activity", "activity": "echo", "input": "${nodes.a.output}", "timeout": "10s", "next": "c"},
	"c": {"type": "activity", "activity": "echo", "input": "${nodes.b.output}", "timeout": "10s"}}}`

const threeActivitiesTS = `import { proxyActivities } from '@temporalio/workflow';
const { echo } = proxyActivities<{ echo(x: unknown): Promise<unknown> }>({ startToCloseTimeout: '10s' });
export default async function three(input: unknown): Promise<unknown> {
  return echo(await echo(await echo(input)));
}
`

const waitingTS = `import { condition, defineSignal, setHandler } from '@temporalio/workflow';
const done = defineSignal('done');
export default async function waiting(): Promise<string> {
  let finished = false;
  setHandler(done, () => { finished = true; });
  await condition(() => finished);
  return 'done';
}
`

const waitingJSON = `{"version": 1, "start": "w", "nodes": {
	"w": {"type": "wait_signal", "signal": "done", "next": "r"},
	"r": {"type": "return", "value": "done"}}}`

// threeActivitiesGo is the native Go workflow the other two are compared with.
func threeActivitiesGo(ctx workflow.Context, input any) (any, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	out := input
	for range 3 {
		if err := workflow.ExecuteActivity(ctx, "echo", out).Get(ctx, &out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// module300 is a 300-line TypeScript module: helpers, types and a workflow using them.
func module300(label string) string {
	var b strings.Builder
	b.WriteString("import { proxyActivities, sleep, condition, defineSignal, defineQuery, setHandler, ApplicationFailure } from '@temporalio/workflow';\n")
	b.WriteString("const acts = proxyActivities<{ echo(x: unknown): Promise<unknown> }>({ startToCloseTimeout: '10s', retry: { maximumAttempts: 3 } });\n")
	b.WriteString("export const approve = defineSignal<[string]>('approve');\nexport const status = defineQuery<string>('status');\n")
	fmt.Fprintf(&b, "const LABEL = %q;\n", label)
	for i := 0; strings.Count(b.String(), "\n") < 280; i++ {
		fmt.Fprintf(&b, `interface Item%[1]d { id: number; name: string; tags: string[] }
function normalise%[1]d(items: Item%[1]d[]): Item%[1]d[] {
  return items
    .filter((it) => it.id %% %[2]d !== 0)
    .map((it) => ({ ...it, name: it.name.trim().toLowerCase(), tags: [...new Set(it.tags)] }));
}
function score%[1]d(item: Item%[1]d): number {
  let s = item.id * %[2]d;
  for (const t of item.tags) s += t.length;
  return s %% 97;
}
`, i, i+2)
	}
	b.WriteString(`export default async function big(items: Item0[]): Promise<unknown> {
  let state = 'started';
  let approver = '';
  setHandler(status, () => state);
  setHandler(approve, (who) => { approver = who; });
  const cleaned = normalise0(items ?? []);
  const scored = cleaned.map((it) => ({ ...it, score: score0(it) }));
  await sleep('1 ms');
  if (scored.length > 1000) throw ApplicationFailure.nonRetryable('too many items', 'TooMany');
  state = 'echoing';
  const echoed = await acts.echo(scored);
  await condition(() => approver !== '', '1 ms');
  state = 'done';
  return { label: LABEL, echoed, approver };
}
`)
	return b.String()
}

// insertModule creates (or, with wf set, compiles a new version of) a workflow in language.
func (b *bench) insertModule(ctx context.Context, project uuid.UUID, wf *uuid.UUID, name, language, code string) error {
	if *wf == uuid.Nil {
		if err := b.pool.QueryRow(ctx, `INSERT INTO workflows (project_id, name, status) VALUES ($1, $2, 'active') RETURNING id`,
			project, name).Scan(wf); err != nil {
			return err
		}
	}
	_, err := b.pool.Exec(ctx, `INSERT INTO compiled_workflows (workflow_id, language, workflow_code) VALUES ($1, $2, $3)`, *wf, language, code)
	return err
}

func (b *bench) runningProject(ctx context.Context, workflows map[string][2]string) (uuid.UUID, string, map[string]uuid.UUID, error) {
	ids, err := b.newProjects(ctx, 1, false)
	if err != nil {
		return uuid.Nil, "", nil, err
	}
	id := ids[0]
	wfs := map[string]uuid.UUID{}
	for name, lc := range workflows {
		var wf uuid.UUID
		if err := b.insertModule(ctx, id, &wf, name, lc[0], lc[1]); err != nil {
			return uuid.Nil, "", nil, err
		}
		wfs[name] = wf
	}
	if _, err := b.setDesired(ctx, ids, "running"); err != nil {
		return uuid.Nil, "", nil, err
	}
	if err := waitFor(ctx, 30*time.Second, time.Millisecond, func() (bool, error) {
		s, _, _, err := b.latest(ctx, id)
		return s == "running", err
	}); err != nil {
		return uuid.Nil, "", nil, err
	}
	var queue string
	err = b.pool.QueryRow(ctx, `SELECT task_queue_name FROM projects WHERE id = $1`, id).Scan(&queue)
	return id, queue, wfs, err
}

func (b *bench) typescript(ctx context.Context) error {
	for _, step := range []func(context.Context) error{b.tsCompileToServing, b.tsFirstTask, b.tsMemoryPerRun, b.tsThroughput} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// tsCompileToServing: a 300-line module compiled again and again while it serves.
func (b *bench) tsCompileToServing(ctx context.Context) error {
	say("TypeScript compile -> serving: %d compiles of a 300-line module", b.o.compiles)
	id, _, wfs, err := b.runningProject(ctx, map[string][2]string{"big": {"typescript", module300("v1")}})
	if err != nil {
		return err
	}
	var lat []time.Duration
	for v := 2; v <= b.o.compiles+1; v++ {
		var gen int64
		if err := b.pool.QueryRow(ctx, `SELECT generation FROM projects WHERE id = $1`, id).Scan(&gen); err != nil {
			return err
		}
		wf := wfs["big"]
		if err := b.insertModule(ctx, id, &wf, "big", "typescript", module300(fmt.Sprintf("v%d", v))); err != nil {
			return err
		}
		t0 := time.Now()
		if err := waitFor(ctx, 30*time.Second, 200*time.Microsecond, func() (bool, error) {
			_, _, g, err := b.latest(ctx, id)
			return g > gen, err
		}); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
	}
	var errs string
	_ = b.pool.QueryRow(ctx, `SELECT coalesce(metadata->>'workflow_errors', '') FROM workflow_workers WHERE project_id = $1 ORDER BY started_at DESC LIMIT 1`, id).Scan(&errs)
	src := module300("v1")
	b.add(row{
		figure: "TypeScript compile committed -> serving (a 300-line module)",
		median: ms(median(lat)), p99: ms(p99(lat)), target: "p99 <= 50 ms",
		met:   yes(p99(lat) <= 50*time.Millisecond && errs == ""),
		floor: ms(b.notifyRTT) + " (NOTIFY)", ratio: ratio(median(lat), b.notifyRTT),
		note: fmt.Sprintf("%d compiles of a %d-line, %d-byte module (esbuild bundle, QuickJS bytecode, top level evaluated), each a new version; workflow_errors after: %q",
			len(lat), strings.Count(src, "\n"), len(src), errs),
	})
	_, err = b.setDesired(ctx, []uuid.UUID{id}, "stopped")
	return err
}

// firstTask is the duration of a run's first workflow task (started -> completed,
// server time), and whether the run completed.
func (b *bench) firstTask(ctx context.Context, workflowID string) (time.Duration, error) {
	var started time.Time
	it := b.tc.GetWorkflowHistory(ctx, workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return 0, err
		}
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED:
			started = e.GetEventTime().AsTime()
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
			return e.GetEventTime().AsTime().Sub(started), nil
		}
	}
	return 0, fmt.Errorf("run %s has no completed workflow task", workflowID)
}

// tsFirstTask: the first workflow task of new runs, TypeScript next to JSON.
func (b *bench) tsFirstTask(ctx context.Context) error {
	say("first workflow task of a new run: %d TypeScript and %d JSON runs", b.o.runs, b.o.runs)
	id, queue, _, err := b.runningProject(ctx, map[string][2]string{"three-ts": {"typescript", threeActivitiesTS}, "three-json": {"json", threeActivitiesJSON}})
	if err != nil {
		return err
	}
	measure := func(workflowType string) ([]time.Duration, error) {
		var out []time.Duration
		for range b.o.runs {
			run, err := b.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "first-" + uuid.NewString(), TaskQueue: queue}, workflowType, "x")
			if err != nil {
				return nil, err
			}
			if err := run.Get(ctx, nil); err != nil {
				return nil, err
			}
			d, err := b.firstTask(ctx, run.GetID())
			if err != nil {
				return nil, err
			}
			out = append(out, d)
		}
		return out, nil
	}
	jsonLat, err := measure("three-json")
	if err != nil {
		return err
	}
	tsLat, err := measure("three-ts")
	if err != nil {
		return err
	}
	b.add(row{
		figure: "TypeScript run: first workflow task of a new run (started -> completed, server time)",
		median: ms(median(tsLat)), p99: ms(p99(tsLat)), target: "p50 <= 5 ms",
		met:   yes(median(tsLat) <= 5*time.Millisecond),
		floor: ms(median(jsonLat)) + " (same workflow in JSON)", ratio: ratio(median(tsLat), median(jsonLat)),
		note: fmt.Sprintf("%d runs each of a three-activity workflow; the task takes a VM with the runtime installed (made ahead of need), loads the bundle's bytecode, runs to the first activity; JSON p99 %s",
			len(tsLat), ms(p99(jsonLat))),
	})
	_, err = b.setDesired(ctx, []uuid.UUID{id}, "stopped")
	return err
}

// rss is the process's resident set, after collections.
func rss() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	data, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// tsMemoryPerRun: the SDK's sticky cache filled with N waiting runs, TypeScript next
// to JSON: the growth of the process's resident memory per run.
func (b *bench) tsMemoryPerRun(ctx context.Context) error {
	n := 300
	say("memory per cached run: %d waiting TypeScript runs, %d JSON runs", n, n)
	id, queue, _, err := b.runningProject(ctx, map[string][2]string{"waiting-ts": {"typescript", waitingTS}, "waiting-json": {"json", waitingJSON}})
	if err != nil {
		return err
	}
	fill := func(workflowType string) (int64, []client.WorkflowRun, error) {
		before := rss()
		var runs []client.WorkflowRun
		for range n {
			run, err := b.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "cached-" + uuid.NewString(), TaskQueue: queue}, workflowType)
			if err != nil {
				return 0, nil, err
			}
			runs = append(runs, run)
		}
		// Every run has completed its first workflow task: it waits, cached.
		for _, run := range runs {
			if err := waitFor(ctx, time.Minute, 5*time.Millisecond, func() (bool, error) {
				_, err := b.firstTask(ctx, run.GetID())
				return err == nil, nil
			}); err != nil {
				return 0, nil, err
			}
		}
		return (rss() - before) / int64(n), runs, nil
	}
	finish := func(runs []client.WorkflowRun) {
		for _, run := range runs {
			_ = b.tc.SignalWorkflow(ctx, run.GetID(), "", "done", nil)
		}
		for _, run := range runs {
			_ = run.Get(ctx, nil)
		}
	}
	jsonPer, jsonRuns, err := b.fillAndLog(fill, "waiting-json")
	if err != nil {
		return err
	}
	finish(jsonRuns)
	tsPer, tsRuns, err := b.fillAndLog(fill, "waiting-ts")
	if err != nil {
		return err
	}
	finish(tsRuns)
	b.add(row{
		figure: "TypeScript run: memory per cached run (sticky cache filled with waiting runs)",
		median: fmt.Sprintf("%.2f MB", float64(tsPer)/1e6), target: "<= 1 MB",
		met:   yes(tsPer <= 1_000_000),
		floor: fmt.Sprintf("%.2f MB (JSON run)", float64(jsonPer)/1e6),
		note:  fmt.Sprintf("growth of the process's resident memory (the VMs live outside the Go heap) with %d runs waiting on a condition, each with its own VM; JSON runs waiting on a signal beside it", n),
	})
	_, err = b.setDesired(ctx, []uuid.UUID{id}, "stopped")
	return err
}

func (b *bench) fillAndLog(fill func(string) (int64, []client.WorkflowRun, error), workflowType string) (int64, []client.WorkflowRun, error) {
	per, runs, err := fill(workflowType)
	if err == nil {
		say("  %s: %.2f MB per cached run", workflowType, float64(per)/1e6)
	}
	return per, runs, err
}

// tsThroughput: runs per second of the same three-activity workflow in JSON,
// TypeScript and native Go, each with 20 runs in flight.
func (b *bench) tsThroughput(ctx context.Context) error {
	const total, inFlight = 300, 20
	say("runs per second: %d runs of a three-activity workflow in JSON, TypeScript and Go", total)
	id, queue, _, err := b.runningProject(ctx, map[string][2]string{"three-ts": {"typescript", threeActivitiesTS}, "three-json": {"json", threeActivitiesJSON}})
	if err != nil {
		return err
	}
	// The native workflow: a bare SDK worker with the same pollers as a project's.
	goQueue := "bench-native-" + uuid.NewString()
	w := worker.New(b.tc, goQueue, worker.Options{MaxConcurrentWorkflowTaskPollers: 2, MaxConcurrentActivityTaskPollers: 1})
	w.RegisterWorkflowWithOptions(threeActivitiesGo, workflow.RegisterOptions{Name: "three-go"})
	w.RegisterActivityWithOptions(func(_ context.Context, x any) (any, error) { return x, nil }, activity.RegisterOptions{Name: "echo"})
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Stop()
	rate := func(queue, workflowType string) (float64, error) {
		t0 := time.Now()
		sem := make(chan struct{}, inFlight)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for range total {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				run, err := b.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "rate-" + uuid.NewString(), TaskQueue: queue}, workflowType, "x")
				if err == nil {
					err = run.Get(ctx, nil)
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return float64(total) / time.Since(t0).Seconds(), firstErr
	}
	rates := map[string]float64{}
	for _, c := range []struct{ name, queue, typ string }{{"go", goQueue, "three-go"}, {"json", queue, "three-json"}, {"ts", queue, "three-ts"}} {
		r, err := rate(c.queue, c.typ)
		if err != nil {
			return fmt.Errorf("%s runs: %w", c.name, err)
		}
		rates[c.name] = r
	}
	b.add(row{
		figure: "runs per second, one three-activity workflow: TypeScript / JSON / native Go",
		median: fmt.Sprintf("%.0f / %.0f / %.0f", rates["ts"], rates["json"], rates["go"]),
		target: "side by side", met: "-",
		floor: fmt.Sprintf("%.0f (Go)", rates["go"]),
		ratio: fmt.Sprintf("TS %.2fx JSON, %.2fx Go", rates["ts"]/rates["json"], rates["ts"]/rates["go"]),
		note:  fmt.Sprintf("%d runs each, %d in flight, one worker with 2 workflow and 1 activity pollers (the native one a bare SDK worker)", total, inFlight),
	})
	_, err = b.setDesired(ctx, []uuid.UUID{id}, "stopped")
	return err
}
