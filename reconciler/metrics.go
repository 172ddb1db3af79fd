package reconciler

import (
	"context"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	sdkmetrics "go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/reconciler/component"
)

// metrics are the service's Prometheus metrics. Per-project labels can be dropped for
// very large fleets (RECONCILER_METRICS_PROJECT_LABELS=false).
type metrics struct {
	registry   *prometheus.Registry
	perProject bool

	reconcileSeconds  *prometheus.HistogramVec // action, outcome
	notifyToApplied   prometheus.Histogram
	restarts          *prometheus.CounterVec // project_id
	failures          *prometheus.CounterVec // project_id
	heartbeatSeconds  prometheus.Histogram
	renewSeconds      prometheus.Histogram
	listenerReconnect prometheus.Counter
	resyncSeconds     prometheus.Histogram
	rowWriteSeconds   prometheus.Histogram
	compileCheck      prometheus.Histogram
	searchAttributes  *prometheus.GaugeVec // attribute
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(perProject bool) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	projectLabels := []string{"project_id"}
	if !perProject {
		projectLabels = nil
	}
	m := &metrics{
		registry:   reg,
		perProject: perProject,
		reconcileSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "reconciler_reconcile_duration_seconds",
			Help:    "Duration of one reconcile of one project, by action (none, start, stop, reload, restart) and outcome (ok, error).",
			Buckets: latencyBuckets,
		}, []string{"action", "outcome"}),
		notifyToApplied: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "reconciler_notify_to_applied_seconds",
			Help:    "From a project's notification arriving to its reconcile having applied the change (start, stop, reload, restart).",
			Buckets: latencyBuckets,
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reconciler_worker_restarts_total",
			Help: "Workers started again after their project's previous worker failed.",
		}, projectLabels),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reconciler_worker_failures_total",
			Help: "Workers that failed: could not start, crashed, or could not poll.",
		}, projectLabels),
		heartbeatSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "reconciler_heartbeat_write_seconds",
			Help:    "Latency of the one heartbeat statement per interval.",
			Buckets: latencyBuckets,
		}),
		renewSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "reconciler_lease_renewal_seconds",
			Help:    "Latency of the one lease renewal statement per interval.",
			Buckets: latencyBuckets,
		}),
		listenerReconnect: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "reconciler_listener_reconnects_total",
			Help: "Connections the LISTEN side had to make again (each is followed by a full resync).",
		}),
		resyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "reconciler_resync_duration_seconds",
			Help:    "Duration of the resync poll (reads every project's desired status and generation).",
			Buckets: latencyBuckets,
		}),
		rowWriteSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "reconciler_row_write_seconds",
			Help:    "Latency of one batched write of workflow_workers rows.",
			Buckets: latencyBuckets,
		}),
		compileCheck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "reconciler_compile_check_seconds",
			Help:    "From a compile's commit to its validation result written in compiled_workflow_checks (by this replica).",
			Buckets: latencyBuckets,
		}),
		searchAttributes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "reconciler_search_attributes_available",
			Help: "1 when the namespace has the search attribute, so that new runs set it; 0 when it lacks it (register with `reconciler search-attributes`).",
		}, []string{"attribute"}),
	}
	reg.MustRegister(m.searchAttributes, m.reconcileSeconds, m.notifyToApplied, m.restarts, m.failures, m.heartbeatSeconds,
		m.renewSeconds, m.listenerReconnect, m.resyncSeconds, m.rowWriteSeconds, m.compileCheck)
	return m
}

// project returns the label values of a per-project metric.
func (m *metrics) project(id uuid.UUID) []string {
	if !m.perProject {
		return nil
	}
	return []string{id.String()}
}

// stateCollector reports, at scrape time, what the reconciler holds and how its
// loops and connections fare (what the alert rules in deploy/prometheus watch).
type stateCollector struct {
	workers      func() []*projectWorker
	backoff      func() int // failed projects waiting to restart
	leases       func() int
	queueLen     func() int
	pending      func() int // rows not written for more than a second
	listenerUp   func() bool
	ready        func(ctx context.Context) (map[string]string, bool)
	heartbeatAge func() time.Duration
	leaseChanges func() (acquired, lost int64)
	limited      func() (clamped, pollsRefused int)

	workersDesc, leasesDesc, queueDesc, pendingDesc                          *prometheus.Desc
	listenerDesc, readyDesc, heartbeatAgeDesc, leaseChangesDesc, limitedDesc *prometheus.Desc
}

func newStateCollector(c stateCollector) *stateCollector {
	c.workersDesc = prometheus.NewDesc("reconciler_workers", "Workers of this replica by state: running, polling_error (running, polls failing), backoff (failed, waiting to restart).", []string{"state"}, nil)
	c.leasesDesc = prometheus.NewDesc("reconciler_leases_held", "Project leases this replica holds.", nil, nil)
	c.queueDesc = prometheus.NewDesc("reconciler_queue_depth", "Projects marked dirty and waiting for a reconcile.", nil, nil)
	c.pendingDesc = prometheus.NewDesc("reconciler_rows_pending", "workflow_workers rows not written for more than a second (the database is slow or down; rows on their way are not counted).", nil, nil)
	c.listenerDesc = prometheus.NewDesc("reconciler_listener_up", "1 when the LISTEN connection is up and its notifications arrive (its own ping came back), else 0.", nil, nil)
	c.readyDesc = prometheus.NewDesc("reconciler_ready", "The checks of /readyz, 1 passing, 0 failing: database, listener, temporal, shutdown (0 while draining).", []string{"check"}, nil)
	c.heartbeatAgeDesc = prometheus.NewDesc("reconciler_heartbeat_age_seconds", "Seconds since this replica last wrote its workers' heartbeats (or had none to write).", nil, nil)
	c.leaseChangesDesc = prometheus.NewDesc("reconciler_lease_changes_total", "Project leases this replica acquired, and lost (taken over by another replica, or given up unrenewed).", []string{"change"}, nil)
	c.limitedDesc = prometheus.NewDesc("reconciler_tenant_limited_workers", "Workers held back by a limit: clamped (worker_options beyond the operator's limits), polls_refused (Temporal refused polls: ResourceExhausted).", []string{"limit"}, nil)
	return &c
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.workersDesc, c.leasesDesc, c.queueDesc, c.pendingDesc,
		c.listenerDesc, c.readyDesc, c.heartbeatAgeDesc, c.leaseChangesDesc, c.limitedDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	running, pollErr := 0, 0
	for _, pw := range c.workers() {
		if msg, _ := pw.pollProblem(); msg != "" {
			pollErr++
		} else {
			running++
		}
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.workersDesc, float64(running), "running")
	gauge(c.workersDesc, float64(pollErr), "polling_error")
	gauge(c.workersDesc, float64(c.backoff()), "backoff")
	gauge(c.leasesDesc, float64(c.leases()))
	gauge(c.queueDesc, float64(c.queueLen()))
	gauge(c.pendingDesc, float64(c.pending()))
	gauge(c.listenerDesc, b2f(c.listenerUp()))
	gauge(c.heartbeatAgeDesc, c.heartbeatAge().Seconds())
	acquired, lost := c.leaseChanges()
	ch <- prometheus.MustNewConstMetric(c.leaseChangesDesc, prometheus.CounterValue, float64(acquired), "acquired")
	ch <- prometheus.MustNewConstMetric(c.leaseChangesDesc, prometheus.CounterValue, float64(lost), "lost")
	clamped, refused := c.limited()
	gauge(c.limitedDesc, float64(clamped), "clamped")
	gauge(c.limitedDesc, float64(refused), "polls_refused")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	checks, _ := c.ready(ctx)
	if _, ok := checks["shutdown"]; !ok {
		checks["shutdown"] = "ok"
	}
	for check, v := range checks {
		gauge(c.readyDesc, b2f(v == "ok"), check)
	}
}

// sdkMetrics is the Temporal SDK's metrics handler, recording into the service's
// registry. The SDK tags worker metrics with the task queue; that becomes a project_id
// label, or, without per-project labels, every per-project tag is dropped.
type sdkMetrics struct {
	reg        *prometheus.Registry
	perProject bool
	projects   *sync.Map // task queue -> project id
	tags       map[string]string

	mu   *sync.Mutex
	vecs map[string]*sdkVec
}

type sdkVec struct {
	labels    []string
	counter   *prometheus.CounterVec
	gauge     *prometheus.GaugeVec
	histogram *prometheus.HistogramVec
}

// perProjectTags are the SDK tags whose values multiply with the number of projects.
var perProjectTags = map[string]bool{"task_queue": true, "workflow_type": true, "activity_type": true}

func newSDKMetrics(reg *prometheus.Registry, perProject bool, projects *sync.Map) *sdkMetrics {
	return &sdkMetrics{reg: reg, perProject: perProject, projects: projects, tags: map[string]string{},
		mu: &sync.Mutex{}, vecs: map[string]*sdkVec{}}
}

func (h *sdkMetrics) WithTags(tags map[string]string) sdkmetrics.MetricsHandler {
	merged := make(map[string]string, len(h.tags)+len(tags))
	for k, v := range h.tags {
		merged[k] = v
	}
	for k, v := range tags {
		merged[k] = v
	}
	c := *h
	c.tags = merged
	return &c
}

// labels turns the handler's tags into label names and values.
func (h *sdkMetrics) labels() ([]string, []string) {
	tags := map[string]string{}
	for k, v := range h.tags {
		if perProjectTags[k] && !h.perProject {
			continue
		}
		tags[sanitize(k)] = v
	}
	if q, ok := h.tags["task_queue"]; ok && h.perProject {
		if id, ok := h.projects.Load(q); ok {
			tags["project_id"] = id.(string)
		}
	}
	names := make([]string, 0, len(tags))
	for k := range tags {
		names = append(names, k)
	}
	sort.Strings(names)
	values := make([]string, len(names))
	for i, n := range names {
		values[i] = tags[n]
	}
	return names, values
}

// vec finds or registers the vector of a metric. Its label names are fixed at first
// use; later uses with other tags fill missing labels with "" and drop unknown ones.
func (h *sdkMetrics) vec(name, kind string) (*sdkVec, []string) {
	names, values := h.labels()
	name = sanitize(name)
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vecs[name]
	if !ok {
		v = &sdkVec{labels: names}
		help := "Temporal SDK metric " + name + "."
		switch kind {
		case "counter":
			v.counter = prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, names)
			_ = h.reg.Register(v.counter)
		case "gauge":
			v.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, names)
			_ = h.reg.Register(v.gauge)
		default:
			v.histogram = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name + "_seconds", Help: help, Buckets: latencyBuckets}, names)
			_ = h.reg.Register(v.histogram)
		}
		h.vecs[name] = v
	}
	if slices.Equal(v.labels, names) {
		return v, values
	}
	byName := map[string]string{}
	for i, n := range names {
		byName[n] = values[i]
	}
	fitted := make([]string, len(v.labels))
	for i, n := range v.labels {
		fitted[i] = byName[n]
	}
	return v, fitted
}

// The SDK may obtain a metric when a worker is built, before the reconciler maps its
// task queue to the project: until the project is known, each use looks again.
func (h *sdkMetrics) resolved() bool {
	if !h.perProject {
		return true
	}
	q, ok := h.tags["task_queue"]
	if !ok {
		return true
	}
	_, known := h.projects.Load(q)
	return known
}

// child finds the labelled metric of name; it is cached once the project is known.
func child[M any](h *sdkMetrics, name, kind string, cache *atomic.Pointer[M], pick func(*sdkVec, []string) (M, bool)) (M, bool) {
	if m := cache.Load(); m != nil {
		return *m, true
	}
	v, values := h.vec(name, kind)
	m, ok := pick(v, values)
	if ok && h.resolved() {
		cache.Store(&m)
	}
	return m, ok
}

func (h *sdkMetrics) Counter(name string) sdkmetrics.MetricsCounter {
	var cache atomic.Pointer[prometheus.Counter]
	return counterFunc(func(n int64) {
		if c, ok := child(h, name, "counter", &cache, func(v *sdkVec, values []string) (prometheus.Counter, bool) {
			if v.counter == nil {
				return nil, false
			}
			return v.counter.WithLabelValues(values...), true
		}); ok {
			c.Add(float64(n))
		}
	})
}

func (h *sdkMetrics) Gauge(name string) sdkmetrics.MetricsGauge {
	var cache atomic.Pointer[prometheus.Gauge]
	return gaugeFunc(func(f float64) {
		if g, ok := child(h, name, "gauge", &cache, func(v *sdkVec, values []string) (prometheus.Gauge, bool) {
			if v.gauge == nil {
				return nil, false
			}
			return v.gauge.WithLabelValues(values...), true
		}); ok {
			g.Set(f)
		}
	})
}

func (h *sdkMetrics) Timer(name string) sdkmetrics.MetricsTimer {
	var cache atomic.Pointer[prometheus.Observer]
	return timerFunc(func(d time.Duration) {
		if o, ok := child(h, name, "timer", &cache, func(v *sdkVec, values []string) (prometheus.Observer, bool) {
			if v.histogram == nil {
				return nil, false
			}
			return v.histogram.WithLabelValues(values...), true
		}); ok {
			o.Observe(d.Seconds())
		}
	})
}

type counterFunc func(int64)

func (f counterFunc) Inc(n int64) { f(n) }

type gaugeFunc func(float64)

func (f gaugeFunc) Update(v float64) { f(v) }

type timerFunc func(time.Duration)

func (f timerFunc) Record(d time.Duration) { f(d) }

// sanitize makes a Prometheus metric or label name.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// sandboxCollector reports the component sandboxes (component.Pool).
type sandboxCollector struct {
	stats                            func() component.PoolStats
	children, waiting, ends, started *prometheus.Desc
}

func newSandboxCollector(stats func() component.PoolStats) *sandboxCollector {
	return &sandboxCollector{
		stats:    stats,
		children: prometheus.NewDesc("reconciler_component_sandboxes", "Component sandbox processes by state: idle, busy.", []string{"state"}, nil),
		waiting:  prometheus.NewDesc("reconciler_component_calls_waiting", "Component calls waiting for a sandbox.", nil, nil),
		started:  prometheus.NewDesc("reconciler_component_sandboxes_started_total", "Component sandbox processes started, replacements included.", nil, nil),
		ends: prometheus.NewDesc("reconciler_component_sandbox_ends_total",
			"Component sandboxes ended during or after a call: timeout (killed at the time limit), memory (killed past the memory limit), died (exited by themselves), recycled (replaced after many calls or growing).", []string{"reason"}, nil),
	}
}

func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.children
	ch <- c.waiting
	ch <- c.started
	ch <- c.ends
}

func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.children, prometheus.GaugeValue, float64(s.Idle), "idle")
	ch <- prometheus.MustNewConstMetric(c.children, prometheus.GaugeValue, float64(s.Live-s.Idle), "busy")
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(s.Waiting))
	ch <- prometheus.MustNewConstMetric(c.started, prometheus.CounterValue, float64(s.Started))
	for reason, n := range map[string]int64{"timeout": s.KilledTime, "memory": s.KilledMemory, "died": s.Died, "recycled": s.Recycled} {
		ch <- prometheus.MustNewConstMetric(c.ends, prometheus.CounterValue, float64(n), reason)
	}
}
