package testenv

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/devenv"
)

// Tool is the path of a program the tests need from the machine (promtool,
// prometheus, chromium). A missing one fails the test with the command that installs
// it: `.ci/run` installs them all, so a test is never skipped for lack of one.
func Tool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/bin", "/usr/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s is not installed: apt-get install -y %s (.ci/run installs it when missing)", name, debianPackage)
	return ""
}

// chromiumFlags make a headless Chromium with a fresh profile that neither phones
// home (the network is closed here) nor slows the timers of a page nobody looks at.
func chromiumFlags(t testing.TB) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
		"--disable-background-timer-throttling", "--disable-renderer-backgrounding",
		"--disable-backgrounding-occluded-windows", "--hide-scrollbars", "--user-data-dir=" + t.TempDir(),
	}
}

// chromiumCommand is Chromium in a process group of its own, so that ending it ends
// its helper processes too.
func chromiumCommand(t testing.TB, ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, Tool(t, "chromium", "chromium"), append(chromiumFlags(t), args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Chromium runs headless Chromium once with args (e.g. "--dump-dom", url) and
// returns what it printed on standard output.
func Chromium(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := chromiumCommand(t, ctx, args)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, lastLinesOf(stderr.String(), 10))
	}
	return string(out)
}

// ChromiumOpen keeps url open in headless Chromium, as a person leaving a tab open
// would, until done says so or timeout passes; then it closes it.
func ChromiumOpen(t testing.TB, url string, timeout time.Duration, done func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// A DevTools port keeps the browser running with no command to finish.
	cmd := chromiumCommand(t, ctx, []string{"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url})
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for !done() {
		select {
		case err := <-exited:
			if ctx.Err() == nil {
				t.Fatalf("chromium ended by itself: %v\n%s", err, lastLinesOf(stderr.String(), 10))
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	<-exited
}

// ArtifactDir is where tests leave files for people to look at (screenshots):
// RECONCILER_TEST_ARTIFACTS, or bin/test-artifacts in the module (git-ignored).
func ArtifactDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("RECONCILER_TEST_ARTIFACTS")
	if dir == "" {
		root, err := devenv.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "bin", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Prometheus starts a Prometheus server (Debian's `prometheus` package) for t with the
// given configuration, storing in a folder of t's, and returns its URL once it is
// ready. It is stopped when t ends.
func Prometheus(t testing.TB, config string) string {
	t.Helper()
	bin := Tool(t, "prometheus", "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := devenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("prometheus exited at start:\n%s", lastLinesOf(log.String(), 10))
		default:
		}
		resp, err := http.Get(url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s:\n%s", lastLinesOf(log.String(), 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a strings.Builder that a child's output may be copied into while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
