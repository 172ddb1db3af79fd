package reconciler_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metricValue sums the samples of a metric whose labels contain every given pair.
func metricValue(t *testing.T, text, name string, labels ...string) (float64, bool) {
	t.Helper()
	sum, found := 0.0, false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

// /metrics moves when a project starts; /readyz turns unready without the database and
// ready again when it returns; /healthz stays up.
func TestOpsListener(t *testing.T) {
	t.Parallel()
	pg, db := testenv.PrivatePostgres(t)
	svc := startService(t, db, func(c *reconciler.Config) { c.OpsAddr = "127.0.0.1:0" })
	base := "http://" + svc.OpsAddr()

	// Ready means notifications arrive: the start below comes through one.
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		code, body := get(t, base+"/readyz")
		return code == 200, body
	})
	if !svc.ListenerDelivers() {
		t.Fatal("/readyz is 200 but the listener does not deliver")
	}
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	_, before := get(t, base+"/metrics")
	if v, _ := metricValue(t, before, "reconciler_workers", `state="running"`); v != 0 {
		t.Fatalf("running workers before any project: %v", v)
	}

	id, _ := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	var after string
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		_, after = get(t, base+"/metrics")
		v, _ := metricValue(t, after, "reconciler_workers", `state="running"`)
		return v == 1, fmt.Sprintf("reconciler_workers{state=running} = %v", v)
	})
	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"reconciler_reconcile_duration_seconds_count", []string{`action="start"`, `outcome="ok"`}},
		{"reconciler_notify_to_applied_seconds_count", nil},
		{"reconciler_leases_held", nil},
		{"reconciler_lease_renewal_seconds_count", nil},
		{"reconciler_row_write_seconds_count", nil},
		{"temporal_worker_start", []string{`project_id="` + id.String() + `"`}},
	} {
		if v, ok := metricValue(t, after, m.name, m.labels...); !ok || v < 1 {
			t.Errorf("%s%v = %v (present %v), want >= 1 after a start", m.name, m.labels, v, ok)
		}
	}

	pg.Stop()
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		code, body := get(t, base+"/readyz")
		return code == 503 && strings.Contains(body, `"database"`) && !strings.Contains(body, `"database":"ok"`), body
	})
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz during the outage: %d %s (the process is alive)", code, body)
	}
	if err := pg.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		code, body := get(t, base+"/readyz")
		return code == 200, body
	})
}

// The Temporal SDK's own log lines about a project's worker carry its project_id.
func TestSDKLogsCarryTheProjectID(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	startServiceLogging(t, db, log, func(c *reconciler.Config) { c.TemporalLogLevel = "info" })
	id, queue := project(t, db.Pool)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	var line map[string]any
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		for _, l := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) != nil {
				continue
			}
			if rec["component"] == "temporal-sdk" && rec["TaskQueue"] == queue {
				line = rec
				return true, ""
			}
		}
		return false, "no SDK log line about the project's task queue yet"
	})
	if line["project_id"] != id.String() {
		t.Fatalf("SDK log line %v carries project_id %v, want %s", line, line["project_id"], id)
	}
}
