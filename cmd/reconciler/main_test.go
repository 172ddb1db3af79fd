package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// command runs the binary with exactly env (plus PATH and HOME).
func command(t *testing.T, ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, testenv.Binary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	return cmd
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestInvalidConfigurationExitsNonZeroNamingTheVariable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env     []string
		name    string
		secrets []string
	}{
		{[]string{"DATABASE_URL=postgres://app:hunter2secret@db.internal:notaport/app"}, "DATABASE_URL", []string{"hunter2secret"}},
		{[]string{"DATABASE_URL=host=db password=hunter2secret port=x"}, "DATABASE_URL", []string{"hunter2secret"}},
		{[]string{"DATABASE_URL=postgres://app@db/app", "RECONCILER_POLL_INTERVAL=hunter2secret"}, "RECONCILER_POLL_INTERVAL", []string{"hunter2secret"}},
		{[]string{"DATABASE_URL=postgres://app@db/app", "RECONCILER_LOG_FORMAT=xml"}, "RECONCILER_LOG_FORMAT", nil},
		{[]string{}, "DATABASE_URL", nil},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := command(t, ctx, c.env, "run").CombinedOutput()
		cancel()
		if code := exitCode(err); code == 0 || code == -1 {
			t.Errorf("%v: exit code %d, want a non-zero exit (output %q)", c.env, code, out)
		}
		if !strings.Contains(string(out), c.name) {
			t.Errorf("%v: message %q does not name %s", c.env, out, c.name)
		}
		for _, s := range c.secrets {
			if strings.Contains(string(out), s) {
				t.Errorf("%v: message %q contains the secret", c.env, out)
			}
		}
	}
}

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	d := testenv.EmptyDatabase(t)
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := command(t, ctx, []string{"DATABASE_URL=" + d.URL}, append([]string{"migrate"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("migrate %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run("version"); got != "no migration applied" {
		t.Errorf("version on an empty database: %q", got)
	}
	up := run("up")
	m := regexp.MustCompile(`^version (\d+)$`).FindStringSubmatch(up)
	if m == nil {
		t.Fatalf("migrate up printed %q", up)
	}
	if got := run("version"); got != up {
		t.Errorf("version after up: %q, want %q", got, up)
	}
	if got := run("down", m[1]); got != "no migration applied" {
		t.Errorf("down %s: %q", m[1], got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := command(t, ctx, []string{"DATABASE_URL=" + d.URL}, "migrate", "down", "zero").CombinedOutput()
	if exitCode(err) != 2 || !strings.Contains(string(out), "positive number") {
		t.Errorf("migrate down zero: exit %d, %q", exitCode(err), out)
	}
}

// TestDevRunsTheDemo is what `make run` does on a machine with nothing configured: it
// prints the demo workflow's result and the addresses of the Temporal Web UI (which
// shows the demo run, found by its project) and of the fleet page, all answering; on
// Ctrl-C it stops everything it started.
func TestDevRunsTheDemo(t *testing.T) {
	t.Parallel()
	cli, err := devenv.FindTemporalCLI()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := command(t, ctx, []string{"RECONCILER_TEMPORAL_CLI=" + cli})
	cmd.Args = append(cmd.Args, "dev")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	var printed []string
	var ports []string
	urls := map[string]string{}
	for lines.Scan() {
		line := lines.Text()
		printed = append(printed, line)
		if m := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindStringSubmatch(line); m != nil && len(ports) < 3 {
			ports = append(ports, m[1]) // PostgreSQL, Temporal, its UI
		}
		if m := regexp.MustCompile(`^(Temporal UI|Fleet|Demo run)\s+(http://\S+)`).FindStringSubmatch(line); m != nil {
			urls[m[1]] = m[2]
		}
		if strings.HasPrefix(line, "Reconciling until Ctrl-C") {
			break
		}
	}
	joined := strings.Join(printed, "\n")
	if !strings.Contains(joined, "returned: Hello, World!") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("dev did not print the demo result:\n%s\nstderr:\n%s", joined, stderr.String())
	}
	t.Logf("make run printed:\n%s", joined)
	if len(ports) != 3 {
		t.Fatalf("dev did not print the PostgreSQL and Temporal addresses and the UI's:\n%s", joined)
	}
	for _, name := range []string{"Temporal UI", "Fleet", "Demo run"} {
		if urls[name] == "" {
			t.Errorf("dev printed no %s URL:\n%s", name, joined)
			continue
		}
		code, body := httpGet(t, urls[name])
		if code != 200 {
			t.Errorf("%s %s: %d %.200s", name, urls[name], code, body)
		}
	}
	if m := regexp.MustCompile(`ReconcilerProjectId = '([0-9a-f-]{36})'`).FindStringSubmatch(joined); m == nil {
		t.Errorf("dev printed no query for the demo project's runs:\n%s", joined)
	} else if ui := urls["Temporal UI"]; ui != "" {
		// What the UI's list shows: its own API, queried by the demo project.
		api := strings.Replace(ui, "/namespaces/", "/api/v1/namespaces/", 1) + "?query=" + url.QueryEscape("ReconcilerProjectId = '"+m[1]+"'")
		code, body := httpGet(t, api)
		if code != 200 || !strings.Contains(body, "demo-greet-") {
			t.Errorf("the Temporal UI does not list the demo run by its project: %s: %d %.300s", api, code, body)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = bufio.NewReader(stdout).WriteTo(discard{}) }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dev after Ctrl-C: %v\n%s", err, stderr.String())
	}
	for _, port := range ports {
		if devenv.Listening("127.0.0.1:" + port) {
			t.Errorf("port %s still listens after dev exited: a server it started was left running", port)
		}
	}
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestStatusShowsEveryProject(t *testing.T) {
	t.Parallel()
	d := testenv.Database(t)
	ctx := context.Background()
	mustExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := d.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	mustExec(`INSERT INTO projects (id, name, task_queue_name, desired_status) VALUES
		('11111111-1111-1111-1111-111111111111', 'healthy-one', 'q1', 'running'),
		('22222222-2222-2222-2222-222222222222', 'parked', 'q2', 'stopped'),
		('33333333-3333-3333-3333-333333333333', 'crashing', 'q3', 'running')`)
	mustExec(`INSERT INTO workflow_workers (worker_id, project_id, task_queue_name, status, host, process_id, last_heartbeat, generation, metadata) VALUES
		('w1', '11111111-1111-1111-1111-111111111111', 'q1', 'running', 'node-a', '101', now(), 1, '{"replica": "node-a-101", "heartbeat_interval_seconds": 10}'),
		('w2', '22222222-2222-2222-2222-222222222222', 'q2', 'stopped', 'node-a', '101', now() - interval '1 hour', 1, '{}'),
		('w3', '33333333-3333-3333-3333-333333333333', 'q3', 'failed', 'node-b', '202', now() - interval '5 seconds', 1,
		 '{"error": "worker cannot poll task queue q3: PermissionDenied", "restarts": 4, "next_retry_at": "2031-01-01T00:00:00Z"}')`)
	mustExec(`INSERT INTO reconciler_replicas (replica_id, host, process_id, capacity, problem) VALUES
		('node-a-101', 'node-a', '101', 100, 'notifications do not arrive: set RECONCILER_LISTEN_DATABASE_URL'),
		('node-b-202', 'node-b', '202', 100, NULL)`)
	env := []string{"DATABASE_URL=" + d.URL}

	out, err := command(t, ctx, env, "status").CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	table := string(out)
	problem, table, _ := strings.Cut(table, "\n\n")
	if problem != "PROBLEM on replica node-a-101 (node-a): notifications do not arrive: set RECONCILER_LISTEN_DATABASE_URL" {
		t.Errorf("status does not lead with the replica's problem:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if !strings.HasPrefix(lines[0], "3 projects, 2 healthy, 1 not") || len(lines) != 6 {
		t.Fatalf("status printed:\n%s", table)
	}
	if !strings.HasPrefix(lines[3], "crashing") {
		t.Errorf("the unhealthy project is not listed first:\n%s", table)
	}
	for _, want := range []string{
		`crashing\s+33333333\s+running\s+failed\s+NO\s+1/1\s+node-b\s+-\s+\d+s ago\s+4\s+retry at 2031-01-01T00:00:00Z: worker cannot poll task queue q3: PermissionDenied`,
		`healthy-one\s+11111111\s+running\s+running\s+yes\s+1/1\s+node-a\s+node-a-101`,
		`parked\s+22222222\s+stopped\s+stopped\s+yes`,
	} {
		if !regexp.MustCompile(want).MatchString(table) {
			t.Errorf("status output lacks %q:\n%s", want, table)
		}
	}

	out, err = command(t, ctx, env, "status", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	byName := map[string]map[string]any{}
	for _, r := range rows {
		byName[r["project_name"].(string)] = r
	}
	if len(rows) != 3 || byName["crashing"]["is_healthy"] != false || byName["crashing"]["restarts"] != float64(4) ||
		byName["healthy-one"]["is_healthy"] != true || byName["parked"]["actual_status"] != "stopped" || byName["parked"]["is_healthy"] != true {
		t.Fatalf("status --json: %s", out)
	}
}
