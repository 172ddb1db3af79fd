// Package deploy holds the deployment files; this test checks them as far as the
// build machine can (see README.md).
package deploy_test

import (
	"bufio"
	"debug/elf"
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
