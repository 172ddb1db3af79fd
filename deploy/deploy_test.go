// Package deploy holds the deployment files; this test checks them as far as the
// build machine can (see README.md).
package deploy_test

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// The build stage of the Dockerfile, run as a script: it must produce a static binary
// that runs; the final image must not run as root.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stage string
	var runs []string
	user := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			stage = line
		case strings.HasPrefix(line, "RUN ") && strings.Contains(stage, " AS build"):
			runs = append(runs, strings.TrimPrefix(line, "RUN "))
		case strings.HasPrefix(line, "USER "):
			user = strings.TrimPrefix(line, "USER ")
		}
	}
	if len(runs) < 2 {
		t.Fatalf("build stage RUN lines: %q", runs)
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		t.Errorf("final stage runs as %q, want a non-root user", user)
	}
	out := t.TempDir()
	script := strings.ReplaceAll(strings.Join(runs, " && "), "/out/", out+"/")
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = root(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build stage %q: %v\n%s", script, err, b)
	}
	bin := filepath.Join(out, "reconciler")
	e, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range e.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary has an ELF interpreter: it is not static and will not run on distroless/static")
		}
	}
	e.Close()
	if b, err := exec.Command(bin, "help").CombinedOutput(); err != nil || !strings.Contains(string(b), "usage: reconciler") {
		t.Errorf("the built binary does not run: %v\n%s", err, b)
	}
}

// yamlDocs parses every document of a YAML file into generic maps.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for _, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(part) == "" {
			continue
		}
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(part), &doc); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, doc)
	}
	return docs
}

// dig walks a parsed YAML document: string keys, int indexes.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	byKind := map[string]map[string]any{}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		for _, doc := range yamlDocs(t, f) {
			kind, _ := doc["kind"].(string)
			if kind == "" || doc["apiVersion"] == nil {
				t.Errorf("%s: a document without kind or apiVersion", f)
			}
			byKind[kind] = doc
		}
	}
	for _, kind := range []string{"Deployment", "PodDisruptionBudget", "Job", "Service", "Secret", "Kustomization"} {
		if byKind[kind] == nil {
			t.Errorf("no %s manifest", kind)
		}
	}
	d := byKind["Deployment"]
	if dig(d, "spec", "replicas") != float64(2) {
		t.Errorf("Deployment replicas = %v, want 2", dig(d, "spec", "replicas"))
	}
	c := dig(d, "spec", "template", "spec", "containers", 0)
	if dig(c, "livenessProbe", "httpGet", "path") != "/healthz" || dig(c, "readinessProbe", "httpGet", "path") != "/readyz" {
		t.Errorf("probes: liveness %v, readiness %v", dig(c, "livenessProbe", "httpGet", "path"), dig(c, "readinessProbe", "httpGet", "path"))
	}
	if dig(c, "resources", "requests", "memory") == nil || dig(c, "resources", "limits", "memory") == nil {
		t.Error("container without memory request and limit")
	}
	if dig(c, "env", 0, "name") != "DATABASE_URL" || dig(c, "env", 0, "valueFrom", "secretKeyRef", "name") != "reconciler-database" {
		t.Errorf("DATABASE_URL is not read from the Secret: %v", dig(c, "env", 0))
	}
	if dig(d, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("pods may run as root")
	}
	if g, _ := dig(d, "spec", "template", "spec", "terminationGracePeriodSeconds").(float64); g < 35 {
		t.Errorf("terminationGracePeriodSeconds %v is shorter than the drain (30s shutdown timeout)", g)
	}
	if dig(byKind["PodDisruptionBudget"], "spec", "minAvailable") != float64(1) {
		t.Error("the PodDisruptionBudget does not keep a replica")
	}
	args := dig(byKind["Job"], "spec", "template", "spec", "containers", 0, "args")
	if a, _ := args.([]any); len(a) != 2 || a[0] != "migrate" || a[1] != "up" {
		t.Errorf("the migration Job runs %v", args)
	}
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	docs := yamlDocs(t, "compose/docker-compose.yml")
	services, _ := docs[0]["services"].(map[string]any)
	for _, s := range []string{"postgres", "temporal", "migrate", "reconciler"} {
		if services[s] == nil {
			t.Errorf("compose has no %s service", s)
		}
	}
	if dig(services, "reconciler", "depends_on", "migrate", "condition") != "service_completed_successfully" {
		t.Error("the reconciler does not wait for the migrations")
	}
	if dig(services, "reconciler", "build", "dockerfile") != "deploy/Dockerfile" {
		t.Error("the reconciler is not built from deploy/Dockerfile")
	}
}

// systemd-analyze verify on the unit, with ExecStart pointing at a real binary.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed on this machine")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "reconciler")
	build := exec.Command("go", "build", "-o", bin, "./cmd/reconciler")
	build.Dir = root(t)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	unit, err := os.ReadFile("systemd/reconciler.service")
	if err != nil {
		t.Fatal(err)
	}
	env, _ := filepath.Abs("systemd/reconciler.env")
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/reconciler", bin)
	text = strings.ReplaceAll(text, "/etc/reconciler/reconciler.env", env)
	path := filepath.Join(dir, "reconciler.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"NoNewPrivileges=yes", "DynamicUser=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "KillSignal=SIGTERM"} {
		if !strings.Contains(text, want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	// systemd's own hardening score: 0 (locked down) to 10 (exposed).
	out, _ = exec.Command(analyze, "security", "--offline=yes", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Logf("systemd-analyze security gave no score:\n%s", out)
	} else if score, _ := strconv.ParseFloat(m[1], 64); score > 2.5 {
		t.Errorf("systemd exposure level %.1f, want at most 2.5", score)
	} else {
		t.Logf("systemd exposure level %.1f", score)
	}
}

// tool finds a program of the machine, or fails with the command that installs it
// (.ci/run installs them when missing).
func tool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is not installed: apt-get install -y %s (.ci/run installs it when missing)", name, debianPackage)
	return ""
}

// The alert rules are valid, their unit tests pass, and every alert has a unit test
// where it fires and one where it does not.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s: %s", strings.Join(args, " "), strings.Join(strings.Fields(string(out)), " "))
	}
	alerts := map[string]bool{}
	for _, g := range dig(yamlDocs(t, "prometheus/alerts.yml")[0], "groups").([]any) {
		for _, r := range dig(g, "rules").([]any) {
			name, _ := dig(r, "alert").(string)
			alerts[name] = true
			if dig(r, "labels", "severity") == nil || dig(r, "annotations", "summary") == nil || dig(r, "annotations", "description") == nil {
				t.Errorf("alert %s lacks a severity, summary or description", name)
			}
		}
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range dig(yamlDocs(t, "prometheus/alerts_test.yml")[0], "tests").([]any) {
		for _, at := range dig(tc, "alert_rule_test").([]any) {
			name, _ := dig(at, "alertname").(string)
			if exp, _ := dig(at, "exp_alerts").([]any); len(exp) > 0 {
				fires[name] = true
			} else {
				quiet[name] = true
			}
		}
	}
	for name := range alerts {
		if !fires[name] || !quiet[name] {
			t.Errorf("alert %s: a unit test where it fires: %v, where it does not: %v", name, fires[name], quiet[name])
		}
	}
	want := []string{"ReconcilerProjectCrashLooping", "ReconcilerProjectsFailing", "ReconcilerHeartbeatsStale",
		"ReconcilerListenerDown", "ReconcilerDown", "ReconcilerNotReady", "ReconcilerLeaseChurn",
		"ReconcilerTenantPollsRefused", "ReconcilerTenantOptionsClamped"}
	for _, name := range want {
		if !alerts[name] {
			t.Errorf("no alert %s", name)
		}
	}
	t.Logf("%d alerts, each with a unit test where it fires and one where it does not", len(alerts))
}

// The Grafana dashboard is importable JSON: a data source variable every panel uses,
// unique panel ids, panels inside the 24-column grid, a query in every panel.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("grafana/reconciler-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if dash["uid"] != "reconciler" || dash["title"] == nil || dash["schemaVersion"] == nil {
		t.Errorf("dashboard uid %v, title %v, schemaVersion %v", dash["uid"], dash["title"], dash["schemaVersion"])
	}
	vars := map[string]bool{}
	for _, v := range dig(dash, "templating", "list").([]any) {
		vars[dig(v, "name").(string)] = true
	}
	if !vars["datasource"] || !vars["job"] || !vars["instance"] {
		t.Errorf("template variables %v, want datasource, job, instance", vars)
	}
	ids := map[float64]bool{}
	queries := 0
	for _, p := range dash["panels"].([]any) {
		id, _ := dig(p, "id").(float64)
		if ids[id] {
			t.Errorf("panel id %v used twice", id)
		}
		ids[id] = true
		x, _ := dig(p, "gridPos", "x").(float64)
		w, _ := dig(p, "gridPos", "w").(float64)
		if w <= 0 || x+w > 24 {
			t.Errorf("panel %v %q outside the grid: x %v w %v", id, dig(p, "title"), x, w)
		}
		if dig(p, "type") == "row" {
			continue
		}
		if dig(p, "datasource", "uid") != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", dig(p, "title"))
		}
		targets, _ := dig(p, "targets").([]any)
		if len(targets) == 0 {
			t.Errorf("panel %q has no query", dig(p, "title"))
		}
		for _, tg := range targets {
			expr, _ := dig(tg, "expr").(string)
			if !strings.Contains(expr, `job=~"$job"`) {
				t.Errorf("panel %q query %q is not filtered by $job", dig(p, "title"), expr)
			}
			queries++
		}
	}
	t.Logf("%d panels, %d queries (the series they read are checked against a running service in reconciler/alerts_test.go)", len(ids), queries)
}

// The autoscaling overlay: the base plus a HorizontalPodAutoscaler on the Deployment,
// scaling on the external metric that the prometheus-adapter rule serves from the
// series the service exports; the replica count is left to the autoscaler.
func TestAutoscalingManifests(t *testing.T) {
	t.Parallel()
	kust := yamlDocs(t, "kubernetes/autoscaling/kustomization.yaml")[0]
	res, _ := dig(kust, "resources").([]any)
	if len(res) != 2 || res[0] != "../" || res[1] != "hpa.yaml" {
		t.Errorf("the overlay's resources are %v, want the base and hpa.yaml", res)
	}
	if patch, _ := dig(kust, "patches", 0, "patch").(string); !strings.Contains(patch, "/spec/replicas") {
		t.Errorf("the overlay does not hand the replica count to the autoscaler: %q", patch)
	}
	hpa := yamlDocs(t, "kubernetes/autoscaling/hpa.yaml")[0]
	deployment := yamlDocs(t, "kubernetes/deployment.yaml")[0]
	if dig(hpa, "apiVersion") != "autoscaling/v2" || dig(hpa, "kind") != "HorizontalPodAutoscaler" {
		t.Fatalf("hpa.yaml is %v %v", dig(hpa, "apiVersion"), dig(hpa, "kind"))
	}
	if dig(hpa, "spec", "scaleTargetRef", "kind") != "Deployment" || dig(hpa, "spec", "scaleTargetRef", "name") != dig(deployment, "metadata", "name") {
		t.Errorf("the HPA scales %v, not the Deployment", dig(hpa, "spec", "scaleTargetRef"))
	}
	if lo, _ := dig(hpa, "spec", "minReplicas").(float64); lo < 2 {
		t.Errorf("minReplicas %v: below the two replicas the PodDisruptionBudget counts on", lo)
	}
	metric, _ := dig(hpa, "spec", "metrics", 0, "external", "metric", "name").(string)
	if metric != "reconciler_task_queue_backlog" || dig(hpa, "spec", "metrics", 0, "external", "target", "type") != "AverageValue" {
		t.Errorf("the HPA's first metric is %v, want the external reconciler_task_queue_backlog per replica", dig(hpa, "spec", "metrics", 0))
	}
	adapter := yamlDocs(t, "kubernetes/autoscaling/prometheus-adapter.values.yaml")[0]
	served := false
	for _, rule := range dig(adapter, "rules", "external").([]any) {
		if dig(rule, "name", "as") == metric && strings.Contains(dig(rule, "metricsQuery").(string), "sum(reconciler_task_queue_backlog{") {
			served = true
		}
	}
	if !served {
		t.Errorf("no prometheus-adapter external rule serves %s", metric)
	}
	// The series is the service's (reconciler/backlog.go names it).
	src, err := os.ReadFile(filepath.Join(root(t), "reconciler", "backlog.go"))
	if err != nil || !strings.Contains(string(src), `"reconciler_task_queue_backlog"`) {
		t.Errorf("reconciler/backlog.go does not export reconciler_task_queue_backlog (%v)", err)
	}
}
