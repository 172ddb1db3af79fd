package reconciler

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
)

func fakeWorkers(n int) []*projectWorker {
	ws := make([]*projectWorker, n)
	for i := range ws {
		ws[i] = &projectWorker{project: uuid.New(), taskQueue: "q-" + uuid.NewString()}
	}
	return ws
}

// However many projects run, the sampler sends one request at a time and no more
// than its rate; a round over few projects waits for the interval.
func TestBacklogSamplerBoundsTheRequestRate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		projects int
		rate     float64
		interval time.Duration
		max      int // requests in the 400 ms the test runs
	}{
		{"many projects: the rate bounds", 1000, 50, 100 * time.Millisecond, 50*0.4 + 2},
		{"one project: the interval bounds", 1, 1000, 100 * time.Millisecond, 2 * 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			workers := fakeWorkers(tc.projects)
			var calls, inFlight, overlapped atomic.Int32
			s := &backlogSampler{
				rate: tc.rate, interval: tc.interval, workers: func() []*projectWorker { return workers },
				log: slog.New(slog.NewTextHandler(io.Discard, nil)), samples: map[uuid.UUID]backlogSample{}, tried: map[uuid.UUID]time.Time{},
				describe: func(context.Context, string, enums.TaskQueueType) (*taskqueuepb.TaskQueueStats, error) {
					if inFlight.Add(1) > 1 {
						overlapped.Add(1)
					}
					defer inFlight.Add(-1)
					calls.Add(1)
					return &taskqueuepb.TaskQueueStats{ApproximateBacklogCount: 1}, nil
				},
			}
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(400 * time.Millisecond) // the test measures a rate over this time
			s.Stop()
			n := int(calls.Load())
			if n > tc.max || n < 2 {
				t.Errorf("%d requests in 400 ms, want between 2 and %d", n, tc.max)
			}
			if overlapped.Load() > 0 {
				t.Errorf("%d requests overlapped another", overlapped.Load())
			}
			t.Logf("%d projects: %d requests in 400 ms", tc.projects, n)
		})
	}
}

// The collector exports the samples of projects running now, on the task queue they
// were taken from; without project labels, the total and the oldest.
func TestBacklogCollector(t *testing.T) {
	t.Parallel()
	ws := fakeWorkers(4)
	s := &backlogSampler{rate: 1, workers: func() []*projectWorker { return ws[:3] }, samples: map[uuid.UUID]backlogSample{
		ws[0].project: {queue: ws[0].taskQueue, count: 5, age: 3 * time.Second},
		ws[1].project: {queue: "an older task queue", count: 7, age: time.Hour},
		ws[2].project: {queue: ws[2].taskQueue, count: 2, age: time.Minute},
		ws[3].project: {queue: ws[3].taskQueue, count: 11, age: time.Hour}, // no longer running here
	}}
	gather := func(perProject bool) map[string]float64 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(newBacklogCollector(s, perProject))
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				key := mf.GetName()
				for _, l := range m.GetLabel() {
					key += "/" + l.GetValue()
				}
				out[key] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	p0, p2 := ws[0].project.String(), ws[2].project.String()
	want := map[string]float64{
		"reconciler_task_queue_backlog/" + p0: 5, "reconciler_task_queue_backlog_age_seconds/" + p0: 3,
		"reconciler_task_queue_backlog/" + p2: 2, "reconciler_task_queue_backlog_age_seconds/" + p2: 60,
	}
	if got := gather(true); !maps.Equal(got, want) {
		t.Errorf("per project: %v, want %v", got, want)
	}
	want = map[string]float64{"reconciler_task_queue_backlog": 7, "reconciler_task_queue_backlog_age_seconds": 60}
	if got := gather(false); !maps.Equal(got, want) {
		t.Errorf("without project labels: %v, want %v", got, want)
	}
}
