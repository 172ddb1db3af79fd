package main

// Tenants: what one project's components cost, and what they can do to another project
// and to the service (SPEC section 6: a neighbour saturating its CPU share, a neighbour
// hitting its memory limit in a loop).

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/fixture"
	"github.com/flowbuilder/reconciler/reconciler/component"
)

const (
	callComponent = `{"version": 1, "start": "a", "nodes": {
		"a": {"type": "activity", "activity": "%s", "input": "${input}", "retry": {"maximum_attempts": 1}, "next": "r"},
		"r": {"type": "return", "value": "${nodes.a.output}"}}}`
	trivialComponent = `function fine(x) { return {sum: x.a + x.b} }`
	spinComponent    = `function spin() { const end = Date.now() + 1000; while (Date.now() < end) {} return 1 }`
	doublingHog      = `function doubling() { let s = "x"; for (;;) s += s }`
	floodHog         = `function flood() { const o = {}; for (let i = 0; ; i++) o["k" + i] = {i, s: "v" + i} }`
)

func (b *bench) tenants(ctx context.Context) error {
	if err := b.componentCallCost(ctx); err != nil {
		return err
	}
	if err := b.noisyCalls(ctx); err != nil {
		return err
	}
	if err := b.noisyNeighbour(ctx); err != nil {
		return err
	}
	return b.memoryNeighbour(ctx)
}

// componentCallCost: one trivial call, in this process as the service used to make it,
// and through a sandbox as it makes it now. Calls are 2 ms apart, as activities are
// (each comes after a Temporal round trip).
func (b *bench) componentCallCost(ctx context.Context) error {
	say("component call: in-process vs sandbox")
	prog, err := component.Compile("fine", trivialComponent)
	if err != nil {
		return err
	}
	in := map[string]any{"a": 1, "b": 2}
	old := component.DefaultLimits
	old.Memory = 0 // no allocation caps and no heap guard: the built-ins as they were
	pool := component.NewPool(component.PoolConfig{Size: 1})
	if err := pool.Start(ctx); err != nil {
		return err
	}
	defer pool.Stop()
	calls := map[string]func() error{
		"before": func() error { _, err := prog.Call(ctx, in, old, nil); return err },
		"caps":   func() error { _, err := prog.Call(ctx, in, component.DefaultLimits, nil); return err },
		"after":  func() error { _, err := pool.Call(ctx, "bench", prog, in, nil); return err },
	}
	lat := map[string][]time.Duration{}
	for round := range 300 {
		for _, name := range []string{"before", "caps", "after"} { // interleaved: the same load for each
			time.Sleep(2 * time.Millisecond)
			t0 := time.Now()
			if err := calls[name](); err != nil {
				return fmt.Errorf("%s call: %w", name, err)
			}
			if round >= 20 { // warm
				lat[name] = append(lat[name], time.Since(t0))
			}
		}
	}
	b.add(row{
		figure: "component call, trivial: in-process fresh goja (before) -> sandbox process (after)",
		median: ms(median(lat["after"])), p99: ms(p99(lat["after"])), target: "-", met: "-",
		floor: ms(median(lat["before"])) + " (before)", ratio: ratio(median(lat["after"]), median(lat["before"])),
		note: fmt.Sprintf("p50/p99: in-process before %s / %s; in-process with today's built-in caps %s / %s; sandbox %s / %s (%d calls each, 2 ms apart, interleaved); the caps are most of the in-process cost, and a sandbox prepares its next runtime while idle",
			ms(median(lat["before"])), ms(p99(lat["before"])), ms(median(lat["caps"])), ms(p99(lat["caps"])),
			ms(median(lat["after"])), ms(p99(lat["after"])), len(lat["after"])),
	})
	return nil
}

// noisyCalls: the same as noisyNeighbour at the level of the component sandboxes,
// without Temporal's round trips (which dominate a workflow's latency on the dev
// server): a project's trivial calls alone and beside another's 50 spinning calls, on
// a pool sized like the service's.
func (b *bench) noisyCalls(ctx context.Context) error {
	say("a project's component calls beside a neighbour's 50 spinning calls (sandboxes only)")
	pool := component.NewPool(component.PoolConfig{Size: component.DefaultPoolSize()})
	if err := pool.Start(ctx); err != nil {
		return err
	}
	defer pool.Stop()
	fine, err := component.Compile("fine", trivialComponent)
	if err != nil {
		return err
	}
	spin, err := component.Compile("spin", spinComponent)
	if err != nil {
		return err
	}
	in := map[string]any{"a": 1, "b": 2}
	calls := func(n int) ([]time.Duration, error) {
		var lat []time.Duration
		for range n {
			time.Sleep(5 * time.Millisecond)
			t0 := time.Now()
			if _, err := pool.Call(ctx, "victim", fine, in, nil); err != nil {
				return nil, err
			}
			lat = append(lat, time.Since(t0))
		}
		return lat, nil
	}
	if _, err := calls(20); err != nil {
		return err
	}
	alone, err := calls(200)
	if err != nil {
		return err
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				_, _ = pool.Call(loadCtx, "neighbour", spin, nil, nil)
			}
		}()
	}
	if err := waitFor(ctx, 10*time.Second, 5*time.Millisecond, func() (bool, error) { return pool.Stats().Waiting >= 40, nil }); err != nil {
		stopLoad()
		wg.Wait()
		return err
	}
	beside, err := calls(200)
	stopLoad()
	wg.Wait()
	if err != nil {
		return err
	}
	p95 := func(d []time.Duration) time.Duration { return quantile(d, 0.95) }
	r50 := float64(median(beside)) / float64(median(alone))
	r95 := float64(p95(beside)) / float64(p95(alone))
	b.add(row{
		figure: "a project's component call beside a neighbour's 50 spinning calls, vs alone (sandboxes only)",
		median: fmt.Sprintf("%.2fx (%s vs %s)", r50, ms(median(beside)), ms(median(alone))),
		p99:    fmt.Sprintf("p95 %.2fx (%s vs %s)", r95, ms(p95(beside)), ms(p95(alone))),
		target: "-", met: "-", floor: "-", ratio: "-",
		note: fmt.Sprintf("%d trivial calls alone and %d beside, 5 ms apart, on %d sandboxes (a project gets at most %d); %s",
			len(alone), len(beside), component.DefaultPoolSize(), max(component.DefaultPoolSize()-1, 1), loadAverage()),
	})
	return nil
}

// tenantProject creates a running project with the given components, each with a
// workflow call_<name> that calls it once, and returns its id and task queue.
func (b *bench) tenantProject(ctx context.Context, components map[string]string) (uuid.UUID, string, error) {
	p, err := fixture.NewProject(ctx, b.pool, "tenant")
	if err != nil {
		return uuid.Nil, "", err
	}
	for name, code := range components {
		if err := fixture.NewComponent(ctx, b.pool, p.ID, name, code); err != nil {
			return uuid.Nil, "", err
		}
		if _, err := fixture.NewWorkflow(ctx, b.pool, "call_"+name, fmt.Sprintf(callComponent, name), p.ID); err != nil {
			return uuid.Nil, "", err
		}
	}
	if _, err := b.setDesired(ctx, []uuid.UUID{p.ID}, "running"); err != nil {
		return uuid.Nil, "", err
	}
	err = waitFor(ctx, 30*time.Second, 5*time.Millisecond, func() (bool, error) {
		s, _, _, err := b.latest(ctx, p.ID)
		return s == "running", err
	})
	return p.ID, p.TaskQueue, err
}

func (b *bench) stopTenant(ctx context.Context, id uuid.UUID) error {
	if _, err := b.setDesired(ctx, []uuid.UUID{id}, "stopped"); err != nil {
		return err
	}
	return waitFor(ctx, time.Minute, 10*time.Millisecond, func() (bool, error) {
		s, _, _, err := b.latest(ctx, id)
		return s == "stopped", err
	})
}

// runWorkflow executes a workflow and waits for its result.
func (b *bench) runWorkflow(ctx context.Context, queue, workflow string, input any) (client.WorkflowRun, error) {
	run, err := b.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflow + "-" + uuid.NewString(), TaskQueue: queue}, workflow, input)
	if err != nil {
		return nil, err
	}
	return run, run.Get(ctx, nil)
}

// victimLatencies runs the victim's workflow n times in a row.
func (b *bench) victimLatencies(ctx context.Context, queue string, n int) ([]time.Duration, error) {
	var lat []time.Duration
	for range n {
		t0 := time.Now()
		if _, err := b.runWorkflow(ctx, queue, "call_fine", map[string]any{"a": 1, "b": 2}); err != nil {
			return nil, fmt.Errorf("victim workflow: %w", err)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// noisyNeighbour: a victim project's workflow (one component call) alone, then beside
// a neighbour keeping 50 spinning component calls in flight, then alone again.
func (b *bench) noisyNeighbour(ctx context.Context) error {
	say("a project's latency beside a neighbour saturating its CPU share")
	victim, vq, err := b.tenantProject(ctx, map[string]string{"fine": trivialComponent})
	if err != nil {
		return err
	}
	neighbour, nq, err := b.tenantProject(ctx, map[string]string{"spin": spinComponent})
	if err != nil {
		return err
	}
	const n = 60
	if _, err := b.victimLatencies(ctx, vq, 10); err != nil { // warm
		return err
	}
	alone1, err := b.victimLatencies(ctx, vq, n)
	if err != nil {
		return err
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var runIDs []string
	spins, spinErrs := 0, 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				run, err := b.tc.ExecuteWorkflow(loadCtx, client.StartWorkflowOptions{ID: "spin-" + uuid.NewString(), TaskQueue: nq}, "call_spin", nil)
				if err != nil {
					continue
				}
				mu.Lock()
				runIDs = append(runIDs, run.GetID())
				mu.Unlock()
				err = run.Get(loadCtx, nil)
				mu.Lock()
				switch {
				case err == nil:
					spins++
				case loadCtx.Err() == nil:
					spinErrs++
				}
				mu.Unlock()
			}
		}()
	}
	if err := waitFor(ctx, 30*time.Second, 10*time.Millisecond, func() (bool, error) {
		return b.svc.ComponentSandboxes().Waiting >= 40, nil
	}); err != nil {
		stopLoad()
		wg.Wait()
		return fmt.Errorf("the neighbour's calls did not queue: %w", err)
	}
	beside, err := b.victimLatencies(ctx, vq, n)
	sandboxes := b.svc.ComponentSandboxes()
	stopLoad()
	wg.Wait()
	if err != nil {
		return err
	}
	if err := b.stopTenant(ctx, neighbour); err != nil {
		return err
	}
	for _, id := range runIDs {
		_ = b.tc.TerminateWorkflow(ctx, id, "", "bench over")
	}
	alone2, err := b.victimLatencies(ctx, vq, n)
	if err != nil {
		return err
	}
	alone := append(append([]time.Duration{}, alone1...), alone2...)
	p95 := func(d []time.Duration) time.Duration { return quantile(d, 0.95) }
	r50 := float64(median(beside)) / float64(median(alone))
	r95 := float64(p95(beside)) / float64(p95(alone))
	b.add(row{
		figure: "a project's workflow latency beside a neighbour saturating its CPU share, vs alone",
		median: fmt.Sprintf("%.2fx (%s vs %s)", r50, ms(median(beside)), ms(median(alone))),
		p99:    fmt.Sprintf("p95 %.2fx (%s vs %s)", r95, ms(p95(beside)), ms(p95(alone))),
		target: "<= 2x", met: yes(r50 <= 2 && r95 <= 2), floor: "-", ratio: "-",
		note: fmt.Sprintf("%d victim runs alone before, %d beside, %d alone after (median %s, %s, %s; p95 %s, %s, %s); the neighbour kept 50 calls of a 1 s spin in flight (%d completed, %d failed meanwhile; %d waiting, %d of %d sandboxes busy when sampled); %s",
			len(alone1), len(beside), len(alone2), ms(median(alone1)), ms(median(beside)), ms(median(alone2)),
			ms(p95(alone1)), ms(p95(beside)), ms(p95(alone2)), spins, spinErrs, sandboxes.Waiting, sandboxes.Live-sandboxes.Idle, sandboxes.Live, loadAverage()),
	})
	return b.stopTenant(ctx, victim)
}

// memoryNeighbour: the service's memory while a neighbour's components hit their
// memory limit over and over.
func (b *bench) memoryNeighbour(ctx context.Context) error {
	say("service memory while a neighbour hits its memory limit in a loop")
	hog, hq, err := b.tenantProject(ctx, map[string]string{"doubling": doublingHog, "flood": floodHog})
	if err != nil {
		return err
	}
	// One of each first, so that what the service allocates once is in the baseline.
	for _, wf := range []string{"call_doubling", "call_flood"} {
		if _, err := b.runWorkflow(ctx, hq, wf, nil); err == nil {
			return fmt.Errorf("%s succeeded", wf)
		}
	}
	heap0, rss0 := serviceMemory()
	before := b.svc.ComponentSandboxes()
	var mu sync.Mutex
	var heapMax, rssMax uint64
	failures, others := 0, 0
	var wg sync.WaitGroup
	deadline := time.Now().Add(20 * time.Second)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wf := []string{"call_doubling", "call_flood"}[i]
			for time.Now().Before(deadline) {
				_, err := b.runWorkflow(ctx, hq, wf, nil)
				mu.Lock()
				if err != nil && strings.Contains(err.Error(), component.FailureMemory) {
					failures++
				} else {
					others++
				}
				mu.Unlock()
			}
		}()
	}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			h, r := serviceMemory()
			mu.Lock()
			heapMax, rssMax = max(heapMax, h), max(rssMax, r)
			mu.Unlock()
		}
	}()
	wg.Wait()
	close(stopSampling)
	<-sampled
	heap1, rss1 := serviceMemory()
	after := b.svc.ComponentSandboxes()
	growth := func(a, b uint64) float64 { return (float64(b) - float64(a)) / (1 << 20) }
	b.add(row{
		figure: "service memory while a neighbour hits its memory limit in a loop (heap after GC, RSS)",
		median: fmt.Sprintf("heap %+.1f MiB, RSS %+.1f MiB", growth(heap0, heap1), growth(rss0, rss1)),
		p99:    fmt.Sprintf("max %+.1f / %+.1f MiB", growth(heap0, heapMax), growth(rss0, rssMax)),
		target: "no growth", met: yes(growth(heap0, heap1) <= 8 && growth(rss0, rss1) <= 32), floor: "-", ratio: "-",
		note: fmt.Sprintf("20 s of two loops calling s += s and an object flood (%d MiB limit): %d calls failed with %s (%d otherwise), %d sandboxes killed for memory, %d died; heap %.0f -> %.0f MiB, RSS %.0f -> %.0f MiB (the whole bench process: service and clients), sampled every second; \"no growth\" read as <= 8 MiB of heap and <= 32 MiB of RSS",
			component.DefaultLimits.Memory>>20, failures, component.FailureMemory, others,
			after.KilledMemory-before.KilledMemory, after.Died-before.Died,
			float64(heap0)/(1<<20), float64(heap1)/(1<<20), float64(rss0)/(1<<20), float64(rss1)/(1<<20)),
	})
	return b.stopTenant(ctx, hog)
}

// serviceMemory is this process's heap in use after a collection, and its RSS.
func serviceMemory() (heap, rss uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b, _ := os.ReadFile("/proc/self/statm")
	if f := strings.Fields(string(b)); len(f) > 1 {
		pages, _ := strconv.ParseUint(f[1], 10, 64)
		rss = pages * uint64(os.Getpagesize())
	}
	return m.HeapInuse, rss
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load average unknown"
	}
	f := strings.Fields(string(b))
	return "load average " + strings.Join(f[:3], " ")
}
