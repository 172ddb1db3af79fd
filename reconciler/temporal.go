package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"google.golang.org/grpc"
)

// newTemporalClient makes the one client every project's worker shares. It is lazy: it
// connects on first use, so the service starts while Temporal is down and its workers
// report the outage in their rows instead. Every poll goes through health, every
// ShutdownWorker is detached from the Stop that sends it (detachedShutdowns); the SDK's
// log lines and metrics name the project of the task queue they are about.
func newTemporalClient(cfg Config, log *slog.Logger, health *pollHealth, shutdowns *detachedShutdowns, projects *sync.Map, metrics client.MetricsHandler) (client.Client, error) {
	level, _ := parseLevel(cfg.TemporalLogLevel)
	handler := projectTagger{Handler: notServedLimiter{Handler: minLevel{log.Handler(), level}, last: &lastLines{m: map[string]time.Time{}}}, projects: projects}
	c, err := client.NewLazyClient(client.Options{
		HostPort:       cfg.TemporalAddress,
		Namespace:      cfg.TemporalNamespace,
		Logger:         tlog.NewStructuredLogger(slog.New(handler).With("component", "temporal-sdk")),
		MetricsHandler: metrics,
		// Worker heartbeats (experimental, for the Temporal UI's worker list) cost one RPC
		// per worker per minute and one more at every worker's shutdown: with thousands
		// of workers per process they are load on the server and slow the drain.
		WorkerHeartbeatInterval: -1,
		ConnectionOptions: client.ConnectionOptions{
			DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(health.interceptor(), shutdowns.interceptor())},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("temporal client for %s: %w", cfg.TemporalAddress, err)
	}
	return c, nil
}

// minLevel drops records below its level: the SDK logs every worker start at info,
// which is noise with thousands of projects.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}

// sdkTaskQueueKey is the attribute the SDK names the task queue with in its logs.
const sdkTaskQueueKey = "TaskQueue"

// projectTagger adds project_id to SDK log records that name a project's task queue,
// so that the SDK's lines about a worker read like the service's own. The SDK binds the
// task queue to its loggers when a worker is built, before the reconciler knows the
// worker will start, so the project is looked up when a line is written.
type projectTagger struct {
	slog.Handler
	projects *sync.Map // task queue -> project id
	queue    string    // the task queue bound with WithAttrs, if any
}

func (h projectTagger) lookup(queue string) (string, bool) {
	id, ok := h.projects.Load(queue)
	if !ok {
		return "", false
	}
	return id.(string), true
}

func (h projectTagger) WithAttrs(attrs []slog.Attr) slog.Handler {
	queue := h.queue
	for _, a := range attrs {
		if a.Key == sdkTaskQueueKey {
			queue = a.Value.String()
		}
	}
	return projectTagger{Handler: h.Handler.WithAttrs(attrs), projects: h.projects, queue: queue}
}

func (h projectTagger) WithGroup(name string) slog.Handler {
	return projectTagger{Handler: h.Handler.WithGroup(name), projects: h.projects, queue: h.queue}
}

func (h projectTagger) Handle(ctx context.Context, r slog.Record) error {
	queue := h.queue
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == sdkTaskQueueKey {
			queue = a.Value.String()
			return false
		}
		return true
	})
	if queue != "" {
		if id, ok := h.lookup(queue); ok {
			r.AddAttrs(slog.String("project_id", id))
		}
	}
	return h.Handler.Handle(ctx, r)
}

// notServedLimiter keeps the SDK's "Workflow panic" lines about runs of a workflow that
// is not served (their workflow task fails and is retried every ~10 s until the grace
// period ends) to one a minute per task queue and workflow type, without the stack
// trace, which says nothing about a workflow that is simply not served.
type notServedLimiter struct {
	slog.Handler
	last  *lastLines
	queue string
}

// lastLines is when a line was last let through, by key. Workflow types come from
// whoever starts runs: past 10,000 keys it starts over rather than grow.
type lastLines struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// allow says whether a line of key may be written now (and records it).
func (l *lastLines) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.m[key]; ok && now.Sub(last) < time.Minute {
		return false
	}
	if len(l.m) >= 10000 {
		clear(l.m)
	}
	l.m[key] = now
	return true
}

func (h notServedLimiter) WithAttrs(attrs []slog.Attr) slog.Handler {
	queue := h.queue
	for _, a := range attrs {
		if a.Key == sdkTaskQueueKey {
			queue = a.Value.String()
		}
	}
	return notServedLimiter{Handler: h.Handler.WithAttrs(attrs), last: h.last, queue: queue}
}

func (h notServedLimiter) WithGroup(name string) slog.Handler {
	return notServedLimiter{Handler: h.Handler.WithGroup(name), last: h.last, queue: h.queue}
}

func (h notServedLimiter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "Workflow panic" {
		return h.Handler.Handle(ctx, r)
	}
	var notServed bool
	var workflowType string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "Error":
			notServed = strings.Contains(a.Value.String(), notServedMarker)
		case "WorkflowType":
			workflowType = a.Value.String()
		}
		return true
	})
	if !notServed {
		return h.Handler.Handle(ctx, r)
	}
	if !h.last.allow(h.queue+"\x00"+workflowType, time.Now()) {
		return nil
	}
	short := slog.NewRecord(r.Time, slog.LevelWarn, "workflow not served: its run waits (at most one line a minute per workflow)", r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "StackTrace" {
			short.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, short)
}
