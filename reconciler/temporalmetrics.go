package reconciler

import "github.com/prometheus/client_golang/prometheus"

// temporalCollector reports, at scrape time, what the service asks of Temporal: the
// requests and long polls it sent, and the long polls it holds open now (Temporal's
// frontend caps them per namespace, see README "Sizing Temporal").
type temporalCollector struct {
	health                     *pollHealth
	requests, polls, pollsHeld *prometheus.Desc
}

func newTemporalCollector(h *pollHealth) *temporalCollector {
	return &temporalCollector{
		health:    h,
		requests:  prometheus.NewDesc("reconciler_temporal_requests_total", "Requests sent to Temporal, long polls apart.", nil, nil),
		polls:     prometheus.NewDesc("reconciler_temporal_polls_total", "Long polls (workflow and activity tasks) sent to Temporal.", nil, nil),
		pollsHeld: prometheus.NewDesc("reconciler_temporal_polls_held", "Long polls held open on Temporal now, all workers of this replica.", nil, nil),
	}
}

func (c *temporalCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.requests
	ch <- c.polls
	ch <- c.pollsHeld
}

func (c *temporalCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(c.health.requests.Load()))
	ch <- prometheus.MustNewConstMetric(c.polls, prometheus.CounterValue, float64(c.health.polls.Load()))
	ch <- prometheus.MustNewConstMetric(c.pollsHeld, prometheus.GaugeValue, float64(c.health.pollsHeld.Load()))
}
