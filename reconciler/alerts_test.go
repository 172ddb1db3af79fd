package reconciler_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// promGet decodes the data of a Prometheus HTTP API answer.
func promGet(t *testing.T, base, path string, data any) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" {
		t.Fatalf("prometheus %s: %v %s", path, err, body.Error)
	}
	if err := json.Unmarshal(body.Data, data); err != nil {
		t.Fatal(err)
	}
}

// metricNameRE finds the series names a query reads.
var metricNameRE = regexp.MustCompile(`\b((?:reconciler|temporal)_[a-z0-9_]+)\b`)

// These series exist only once something failed, which this test does not provoke.
var onlyAfterFailures = []string{
	"temporal_workflow_failed", "temporal_activity_execution_failed",
	"temporal_request_failure", "temporal_long_request_failure",
}

// A real Prometheus scrapes a running service, with the rules of deploy/prometheus as
// shipped: the crash loop of one project fires ReconcilerProjectCrashLooping for that
// project and nothing else fires; every series the rules and the Grafana dashboard
// read is one the service exports.
func TestPrometheusFiresTheCrashLoopAlert(t *testing.T) {
	t.Parallel()
	rules, err := filepath.Abs(filepath.Join("..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	address, badQueue := crashLoopTemporal(t)
	db := testenv.Database(t)
	tc := testenv.TemporalClientOf(t, address)
	svc := startService(t, db, func(c *reconciler.Config) {
		c.OpsAddr = "127.0.0.1:0"
		c.TemporalAddress = address
		c.BackoffBase, c.BackoffMax = 100*time.Millisecond, 500*time.Millisecond
	})
	prom := testenv.Prometheus(t, fmt.Sprintf(`
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: reconciler
    static_configs:
      - targets: [%q]
`, rules, svc.OpsAddr()))

	good, goodQueue := project(t, db.Pool)
	workflow(t, db.Pool, good, "greet", greetV1)
	bad, _ := project(t, db.Pool)
	exec(t, db.Pool, `UPDATE projects SET task_queue_name = $2 WHERE id = $1`, bad, badQueue)
	workflow(t, db.Pool, bad, "greet", greetV1)
	setDesired(t, db.Pool, good, "running")
	setDesired(t, db.Pool, bad, "running")
	waitWorker(t, db.Pool, good, 30*time.Second, hasStatus("running"))
	var out string
	if err := execute(t, tc, goodQueue, "greet", map[string]any{"name": "prometheus"}, &out); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	type alert struct {
		Labels map[string]string `json:"labels"`
		State  string            `json:"state"`
	}
	var alerts struct {
		Alerts []alert `json:"alerts"`
	}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		promGet(t, prom, "/api/v1/alerts", &alerts)
		for _, a := range alerts.Alerts {
			if a.Labels["alertname"] == "ReconcilerProjectCrashLooping" && a.State == "firing" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("alerts: %+v", alerts.Alerts)
	})
	t.Logf("ReconcilerProjectCrashLooping fired %s after the project was set running", time.Since(began).Round(100*time.Millisecond))
	for _, a := range alerts.Alerts {
		switch {
		case a.Labels["alertname"] != "ReconcilerProjectCrashLooping":
			t.Errorf("unexpected alert %s (%s): %v", a.Labels["alertname"], a.State, a.Labels)
		case a.Labels["project_id"] != bad.String():
			t.Errorf("crash loop alert for %s, want the crash-looping project %s", a.Labels["project_id"], bad)
		}
	}

	// Every series read by the rules and the dashboard is scraped.
	var names []string
	promGet(t, prom, "/api/v1/label/__name__/values", &names)
	var missing []string
	for _, expr := range queries(t, rules, filepath.Join("..", "deploy", "grafana", "reconciler-dashboard.json")) {
		for _, m := range metricNameRE.FindAllStringSubmatch(expr, -1) {
			if !slices.Contains(names, m[1]) && !slices.Contains(onlyAfterFailures, m[1]) && !slices.Contains(missing, m[1]) {
				missing = append(missing, m[1])
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("series read by deploy/prometheus/alerts.yml or the dashboard that the service does not export: %s",
			strings.Join(missing, ", "))
	}
}

// queries are the PromQL expressions of an alert rules file and a Grafana dashboard.
func queries(t *testing.T, rulesFile, dashboardFile string) []string {
	t.Helper()
	var out []string
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	if b, err = os.ReadFile(dashboardFile); err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	return out
}
