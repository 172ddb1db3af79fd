package reconciler

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

// backlogSampler samples the task-queue backlog of every project running here: how
// many tasks wait (workflow and activity tasks) and how old the oldest is, from
// Temporal's DescribeTaskQueue with stats. Requests go one at a time, at most rate per
// second whatever the project count, and each project is sampled at most once per
// interval (a project that starts is sampled within a second); with many projects a
// round simply takes longer. The samples are exported
// as reconciler_task_queue_backlog and reconciler_task_queue_backlog_age_seconds, the
// metric the HorizontalPodAutoscaler in deploy/kubernetes scales on.
type backlogSampler struct {
	rate     float64       // requests per second; 0: off
	interval time.Duration // least time between two samples of one project
	workers  func() []*projectWorker
	describe func(ctx context.Context, queue string, typ enums.TaskQueueType) (*taskqueuepb.TaskQueueStats, error)
	log      *slog.Logger

	mu      sync.Mutex
	samples map[uuid.UUID]backlogSample
	tried   map[uuid.UUID]time.Time // projects not sampled yet: when a sample last failed
	noStats atomic.Bool             // Temporal answered without stats (said once)

	runner
}

// backlogSample is a project's backlog as last seen.
type backlogSample struct {
	queue string
	count int64
	age   time.Duration
	at    time.Time // when it was taken
}

func newBacklogSampler(cfg Config, tc client.Client, workers func() []*projectWorker, log *slog.Logger) *backlogSampler {
	return &backlogSampler{
		rate:     cfg.BacklogSampleRate,
		interval: cfg.BacklogSampleInterval,
		workers:  workers,
		log:      log,
		samples:  map[uuid.UUID]backlogSample{},
		tried:    map[uuid.UUID]time.Time{},
		describe: func(ctx context.Context, queue string, typ enums.TaskQueueType) (*taskqueuepb.TaskQueueStats, error) {
			resp, err := tc.WorkflowService().DescribeTaskQueue(ctx, &workflowservice.DescribeTaskQueueRequest{
				Namespace:     cfg.TemporalNamespace,
				TaskQueue:     &taskqueuepb.TaskQueue{Name: queue, Kind: enums.TASK_QUEUE_KIND_NORMAL},
				TaskQueueType: typ,
				ReportStats:   true,
			})
			return resp.GetStats(), err
		},
	}
}

// Start runs the loop until Stop (not at all when the rate is 0).
func (s *backlogSampler) Start(ctx context.Context) error {
	if s.rate <= 0 {
		return nil
	}
	s.start(ctx, s.loop)
	return nil
}

// Stop ends the loop; idempotent.
func (s *backlogSampler) Stop() {
	s.stop()
}

func (s *backlogSampler) loop(ctx context.Context) {
	pace := time.NewTicker(time.Duration(float64(time.Second) / s.rate))
	defer pace.Stop()
	for {
		workers := s.workers()
		s.prune(workers)
		due := s.due(workers, time.Now())
		if len(due) == 0 {
			// Look again soon: a project that starts is sampled within a second.
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(s.interval, time.Second)):
			}
			continue
		}
		for _, pw := range due {
			sample := backlogSample{queue: pw.taskQueue}
			ok := true
			for _, typ := range []enums.TaskQueueType{enums.TASK_QUEUE_TYPE_WORKFLOW, enums.TASK_QUEUE_TYPE_ACTIVITY} {
				select {
				case <-ctx.Done():
					return
				case <-pace.C:
				}
				stats, err := s.sample(ctx, pw.taskQueue, typ)
				if err != nil || stats == nil {
					ok = false
					break
				}
				sample.count += stats.GetApproximateBacklogCount()
				sample.age = max(sample.age, stats.GetApproximateBacklogAge().AsDuration())
			}
			sample.at = time.Now()
			s.mu.Lock()
			if ok {
				s.samples[pw.project] = sample
			} else if old, seen := s.samples[pw.project]; seen {
				old.at = sample.at // tried: due again after the interval, with the last value kept
				s.samples[pw.project] = old
			} else {
				s.tried[pw.project] = sample.at
			}
			s.mu.Unlock()
		}
	}
}

// due are the workers whose project has not been sampled (or tried) within the interval.
func (s *backlogSampler) due(workers []*projectWorker, now time.Time) []*projectWorker {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*projectWorker
	for _, pw := range workers {
		last, ok := s.samples[pw.project]
		at := last.at
		if !ok || last.queue != pw.taskQueue {
			at = s.tried[pw.project]
		}
		if now.Sub(at) >= s.interval {
			due = append(due, pw)
		}
	}
	return due
}

func (s *backlogSampler) sample(ctx context.Context, queue string, typ enums.TaskQueueType) (*taskqueuepb.TaskQueueStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stats, err := s.describe(ctx, queue, typ)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("task queue backlog not sampled", "task_queue", queue, "error", err)
		}
		return nil, err
	}
	if stats == nil && !s.noStats.Swap(true) {
		s.log.Warn("Temporal does not report task queue stats (DescribeTaskQueue with report_stats): the backlog metrics stay empty", "task_queue", queue)
	}
	return stats, nil
}

// prune forgets the samples of projects that no longer run here.
func (s *backlogSampler) prune(workers []*projectWorker) {
	running := make(map[uuid.UUID]bool, len(workers))
	for _, pw := range workers {
		running[pw.project] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.samples {
		if !running[id] {
			delete(s.samples, id)
		}
	}
	for id := range s.tried {
		if !running[id] {
			delete(s.tried, id)
		}
	}
}

// backlogCollector exports the samples of the projects running now (a project that
// stopped, or whose worker serves another task queue, has no value until sampled
// again). Without per-project labels it exports the total and the oldest.
type backlogCollector struct {
	sampler    *backlogSampler
	perProject bool
	count, age *prometheus.Desc
}

func newBacklogCollector(s *backlogSampler, perProject bool) *backlogCollector {
	var labels []string
	if perProject {
		labels = []string{"project_id"}
	}
	return &backlogCollector{
		sampler:    s,
		perProject: perProject,
		count: prometheus.NewDesc("reconciler_task_queue_backlog",
			"Tasks waiting in a running project's task queue (workflow and activity tasks; Temporal's approximate backlog count), as last sampled; without project labels, the total.", labels, nil),
		age: prometheus.NewDesc("reconciler_task_queue_backlog_age_seconds",
			"Age of the oldest task waiting in a running project's task queue, as last sampled; without project labels, the oldest of all.", labels, nil),
	}
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.count
	ch <- c.age
}

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	if c.sampler.rate <= 0 {
		return
	}
	workers := c.sampler.workers()
	c.sampler.mu.Lock()
	defer c.sampler.mu.Unlock()
	var total int64
	var oldest time.Duration
	for _, pw := range workers {
		s, ok := c.sampler.samples[pw.project]
		if !ok || s.queue != pw.taskQueue {
			continue
		}
		if c.perProject {
			id := pw.project.String()
			ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(s.count), id)
			ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, s.age.Seconds(), id)
		}
		total += s.count
		oldest = max(oldest, s.age)
	}
	if !c.perProject {
		ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(total))
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, oldest.Seconds())
	}
}
