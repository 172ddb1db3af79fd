package main

// The bench's environment: the service under test, the Temporal client, and the
// fixtures that create projects and read their rows.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/fixture"
	"github.com/flowbuilder/reconciler/reconciler"
)

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

func (b *bench) startService(ctx context.Context) error {
	cfg := reconciler.DefaultConfig()
	cfg.DatabaseURL = b.pg.URL("postgres")
	cfg.TemporalAddress = b.temporal.Address()
	cfg.WorkflowPollers = 2
	cfg.ActivityPollers = 1
	cfg.Concurrency = 128
	cfg.DatabaseMaxConns = 40
	cfg.HeartbeatInterval = 2 * time.Second
	cfg.OpsAddr = "127.0.0.1:0"
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

// newProjects creates n stopped projects, each with one compiled, active workflow
// when withWorkflow.
func (b *bench) newProjects(ctx context.Context, n int, withWorkflow bool) ([]uuid.UUID, error) {
	ps, err := fixture.NewProjects(ctx, b.pool, "bench", n)
	if err != nil || !withWorkflow {
		return fixture.IDs(ps), err
	}
	ids := fixture.IDs(ps)
	_, err = fixture.NewWorkflow(ctx, b.pool, "labelled", fmt.Sprintf(labelled, "v1"), ids...)
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

// latest is the status, worker id and generation of a project's newest row ("" when
// it has none).
func (b *bench) latest(ctx context.Context, id uuid.UUID) (status, worker string, generation int64, err error) {
	w, _, err := fixture.LatestWorker(ctx, b.pool, id)
	return w.Status, w.WorkerID, w.Generation, err
}

func (b *bench) setDesired(ctx context.Context, ids []uuid.UUID, status string) (time.Time, error) {
	return fixture.SetDesired(ctx, b.pool, status, ids...)
}

type quiet struct{}

func (quiet) Debug(string, ...any) {}

func (quiet) Info(string, ...any) {}

func (quiet) Warn(string, ...any) {}

func (quiet) Error(string, ...any) {}

// cpuTime is the CPU the bench process (the in-process service) has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processCPU is the CPU time used so far by this process ("bench": the bench and the
// in-process service) and by every process named postgres or temporal (their children
// included while they live), from /proc; Linux's 100 clock ticks a second.
func processCPU() map[string]time.Duration {
	out := map[string]time.Duration{"bench": cpuTime()}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		open, closing := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || closing < open {
			continue
		}
		name := string(stat[open+1 : closing])
		if name != "postgres" && name != "temporal" {
			continue
		}
		fields := strings.Fields(string(stat[closing+1:])) // from field 3 (state) on
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64) // field 14
		stime, _ := strconv.ParseInt(fields[12], 10, 64) // field 15
		out[name] += time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return out
}

// svcMetric reads a metric (summed over its labels) from the in-process service's
// /metrics; 0 when it cannot.
func (b *bench) svcMetric(name string) float64 {
	return scrapeMetric("http://"+b.svc.OpsAddr()+"/metrics", name)
}

// scrapeMetric reads a metric (summed over its labels) from a Prometheus endpoint.
func scrapeMetric(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
