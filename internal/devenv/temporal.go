package devenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Temporal is a Temporal dev server run from the official CLI, in memory (nothing
// survives Stop), on loopback, headless unless asked for its Web UI.
type Temporal struct {
	cli     string
	port    int
	uiPort  int // 0: headless
	dynamic []string
	attrs   []string
	persist bool
	pragmas []string
	dir     string
	proc    *child
}

// TemporalOptions tune the dev server.
type TemporalOptions struct {
	// CLI is the path of the temporal binary; empty means FindTemporalCLI.
	CLI string
	// DynamicConfig values, e.g. "frontend.namespaceCount=10000", on top of
	// DefaultDynamicConfig (a value given here for one of its keys replaces it).
	DynamicConfig []string
	// Persistent keeps the server's state in a database file in its folder, so that a
	// Stop and Start keep every workflow (and the namespace).
	Persistent bool
	// UI serves the Temporal Web UI on a free port (see UIURL).
	UI bool
	// SearchAttributes are registered in the default namespace at start, as
	// "Name=Type" (e.g. "ReconcilerProjectId=Keyword").
	SearchAttributes []string
	// SQLitePragmas tune that file, e.g. "journal_mode=wal", "synchronous=off" (a
	// busy persistent server is much faster without a sync at every commit).
	SQLitePragmas []string
}

// DefaultDynamicConfig is what every dev server started here runs with: one partition
// per task queue. Temporal splits each task queue into 4 partitions by default and sends
// each poll to one of them; a project's worker holds one poll on its task queue and one
// or two activity polls, fewer than the partitions, and a task written to a partition
// no poll waits on can wait until a poll expires (60 s). Measured in make bench after
// 1,000 workers started at once: 2 of 20 runs had not started after 30 s with 4
// partitions, 20 of 20 completed with 1. README, "Sizing Temporal", says the same for a
// real cluster.
var DefaultDynamicConfig = []string{
	"matching.numTaskqueueReadPartitions=1",
	"matching.numTaskqueueWritePartitions=1",
}

// OverrideConfig returns base with the values of extra added, a value of extra
// replacing the one of base with the same key.
func OverrideConfig(base, extra []string) []string {
	var out []string
	for _, b := range base {
		key, _, _ := strings.Cut(b, "=")
		overridden := false
		for _, e := range extra {
			if k, _, _ := strings.Cut(e, "="); k == key {
				overridden = true
			}
		}
		if !overridden {
			out = append(out, b)
		}
	}
	return append(out, extra...)
}

// StartTemporal starts a dev server on a free port and waits until its frontend
// answers. A free port can be taken by another process before the server
// binds it: a server that exits at start is tried again on other ports.
func StartTemporal(ctx context.Context, opts TemporalOptions) (*Temporal, error) {
	cli := opts.CLI
	if cli == "" {
		var err error
		if cli, err = FindTemporalCLI(); err != nil {
			return nil, err
		}
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var t *Temporal
		if t, err = startTemporalOnce(ctx, cli, opts); err == nil || !errors.Is(err, errExited) {
			return t, err
		}
	}
	return nil, err
}

func startTemporalOnce(ctx context.Context, cli string, opts TemporalOptions) (*Temporal, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "reconciler-temporal-")
	if err != nil {
		return nil, fmt.Errorf("create temporal folder: %w", err)
	}
	t := &Temporal{cli: cli, port: port, dynamic: OverrideConfig(DefaultDynamicConfig, opts.DynamicConfig), attrs: opts.SearchAttributes, persist: opts.Persistent, pragmas: opts.SQLitePragmas, dir: dir}
	if opts.UI {
		if t.uiPort, err = FreePort(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := t.Start(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return t, nil
}

// Address is the frontend's host:port.
func (t *Temporal) Address() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(t.port)) }

// UIURL is the Web UI's address ("" when headless).
func (t *Temporal) UIURL() string {
	if t.uiPort == 0 {
		return ""
	}
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(t.uiPort))
}

// Start (re)starts the server on its port. A restarted dev server has lost every
// workflow, unless it is Persistent.
func (t *Temporal) Start(ctx context.Context) error {
	if t.proc != nil {
		return errors.New("temporal is already running")
	}
	metricsPort, err := FreePort()
	if err != nil {
		return err
	}
	httpPort, err := FreePort()
	if err != nil {
		return err
	}
	args := []string{"server", "start-dev",
		"--ip", "127.0.0.1",
		"--port", strconv.Itoa(t.port),
		"--http-port", strconv.Itoa(httpPort),
		"--metrics-port", strconv.Itoa(metricsPort),
		"--log-level", "error",
		"--disable-config-file", "--disable-config-env",
	}
	if t.uiPort == 0 {
		args = append(args, "--headless")
	} else {
		args = append(args, "--ui-ip", "127.0.0.1", "--ui-port", strconv.Itoa(t.uiPort))
	}
	for _, a := range t.attrs {
		args = append(args, "--search-attribute", a)
	}
	for _, v := range t.dynamic {
		args = append(args, "--dynamic-config-value", v)
	}
	if t.persist {
		args = append(args, "--db-filename", filepath.Join(t.dir, "temporal.db"))
		for _, p := range t.pragmas {
			args = append(args, "--sqlite-pragma", p)
		}
	}
	proc, err := startChild(t.cli, args, t.dir, filepath.Join(t.dir, "temporal.log"), nil)
	if err != nil {
		return fmt.Errorf("temporal dev server: %w", err)
	}
	t.proc = proc
	err = proc.waitReady(ctx, func() error {
		// A Temporal frontend must answer, not just something on the port: a port found
		// free can be taken meanwhile by another process (another test's dev server
		// binds several), and then this server exits while that one answers for a while.
		if err := frontendAnswers(ctx, t.Address()); err != nil {
			return err
		}
		if t.uiPort != 0 {
			// The UI's server reaches the frontend by itself, after a backoff if it tried
			// too early: it is ready when its API answers.
			return uiAnswers(ctx, t.UIURL()+"/api/v1/namespaces")
		}
		return nil
	})
	if errors.Is(err, errExited) {
		t.proc = nil
		b, _ := os.ReadFile(filepath.Join(t.dir, "temporal.log"))
		return fmt.Errorf("temporal dev server %w at start: %s", errExited, firstError(b))
	}
	if err != nil {
		t.Stop()
		return fmt.Errorf("temporal dev server on %s: %w", t.Address(), err)
	}
	return nil
}

// frontendAnswers says whether a Temporal frontend answers at address.
func frontendAnswers(ctx context.Context, address string) error {
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = workflowservice.NewWorkflowServiceClient(conn).GetSystemInfo(ctx, &workflowservice.GetSystemInfoRequest{})
	return err
}

// Stop stops the server; Start brings it up again on the same port.
func (t *Temporal) Stop() {
	if t.proc == nil {
		return
	}
	t.proc.stop(syscall.SIGTERM, 10*time.Second)
	t.proc = nil
}

// Close stops the server and removes its folder.
func (t *Temporal) Close() {
	t.Stop()
	_ = os.RemoveAll(t.dir)
}

// FindTemporalCLI looks for the temporal binary: RECONCILER_TEMPORAL_CLI, then bin/temporal
// in this module (where the Makefile builds it), then PATH.
func FindTemporalCLI() (string, error) {
	if p := os.Getenv("RECONCILER_TEMPORAL_CLI"); p != "" {
		return p, nil
	}
	if root, err := ModuleRoot(); err == nil {
		p := filepath.Join(root, "bin", "temporal")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("temporal"); err == nil {
		return p, nil
	}
	return "", errors.New("temporal CLI not found: run `make tools` (builds bin/temporal) or set RECONCILER_TEMPORAL_CLI")
}

// ModuleRoot is the nearest folder above the working directory that holds go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func uiAnswers(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("temporal UI: %s", resp.Status)
	}
	return nil
}

// firstError is the first line of a server's log that says what went wrong (a panic's
// message rather than the bottom of its stack), or its last lines.
func firstError(log []byte) string {
	for _, line := range strings.Split(string(log), "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "panic:") || strings.Contains(l, "error") || strings.Contains(l, "address already in use") {
			return strings.TrimSpace(line)
		}
	}
	return lastLines(log, 5)
}
