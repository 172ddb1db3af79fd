package main

// The environment: the built binary, a private PostgreSQL, a persistent Temporal dev
// server, and the replicas as child processes, each reaching PostgreSQL through its
// own TCP proxy.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/devenv"
)

// replicaEnv is the configuration every replica runs with: intervals shortened where
// the README's configuration table allows, so that faults resolve within seconds.
var replicaEnv = []string{
	"RECONCILER_LEASE_TTL=6s",            // >= 3 x renew + 0.5 s; a killed replica's projects move within ~7 s
	"RECONCILER_LEASE_RENEW_INTERVAL=1s", // the default
	"RECONCILER_HEARTBEAT_INTERVAL=1s",
	"RECONCILER_STALE_AFTER=6s", // >= 2 x heartbeat; a silent replica is presumed dead after it
	"RECONCILER_POLL_INTERVAL=5s",
	"RECONCILER_LISTENER_PING_INTERVAL=3s",
	"RECONCILER_LISTENER_PING_TIMEOUT=2s",
	"RECONCILER_POLL_FAILURE_THRESHOLD=5s",
	"RECONCILER_BACKOFF_BASE=500ms",
	"RECONCILER_BACKOFF_MAX=5s",
	"RECONCILER_WORKER_STOP_TIMEOUT=5s",
	"RECONCILER_SHUTDOWN_TIMEOUT=20s",
	"RECONCILER_WORKFLOW_POLLERS=2",
	"RECONCILER_ACTIVITY_POLLERS=1",
	"RECONCILER_OPS_ADDR=off",
	"RECONCILER_HTTP_ALLOW_PRIVATE=true",
	"RECONCILER_LOG_LEVEL=info",
	"RECONCILER_TEMPORAL_LOG_LEVEL=warn",
}

// buildBinary builds cmd/reconciler into dir.
func buildBinary(ctx context.Context, dir string) (string, error) {
	root, err := devenv.ModuleRoot()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "reconciler")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./cmd/reconciler")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/reconciler: %v\n%s", err, out)
	}
	return path, nil
}

// startTemporal starts a dev server whose state is a database file, sized for n
// projects (README, "Sizing Temporal"): polls per namespace and request rates.
func startTemporal(ctx context.Context, n int) (*devenv.Temporal, error) {
	return devenv.StartTemporal(ctx, devenv.TemporalOptions{
		Persistent: true,
		// A write-ahead log and no sync at each commit: the state survives a restart
		// of the server (not of the machine), and a busy soak does not wait on fsync.
		SQLitePragmas: []string{"journal_mode=wal", "synchronous=off"},
		DynamicConfig: []string{
			fmt.Sprintf("frontend.namespaceCount=%d", 4*n+1000),
			fmt.Sprintf("frontend.rps=%d", 20*n+2400),
			fmt.Sprintf("frontend.namespaceRPS=%d", 20*n+2400),
		},
	})
}

// dialTemporal connects to Temporal, waiting until the namespace answers.
func dialTemporal(ctx context.Context, address string) (client.Client, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := client.Dial(client.Options{HostPort: address, Logger: quiet{}})
		if err == nil {
			_, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: "default"})
			if err == nil {
				return c, nil
			}
			c.Close()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("temporal not ready: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replica is one `reconciler run` process, restarted under the same name (as a
// systemd unit or a pod would be), its database connections through its own proxy.
type replica struct {
	name    string
	proxy   *devenv.Proxy
	env     []string
	binary  string
	logPath string
	s       *soak

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	expected bool // the nemesis or the harness asked it to exit
	paused   bool
	starts   int
	pids     []int
}

func newReplica(s *soak, name string, env []string) (*replica, error) {
	proxy, err := devenv.StartProxy(fmt.Sprintf("127.0.0.1:%d", s.pg.Port()))
	if err != nil {
		return nil, err
	}
	r := &replica{name: name, proxy: proxy, binary: s.binary, logPath: filepath.Join(s.dir, name+".log"), s: s}
	url := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&application_name=reconciler-%s", proxy.Addr(), name)
	r.env = append([]string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"DATABASE_URL=" + url,
		"TEMPORAL_ADDRESS=" + s.temporal.Address(),
		"RECONCILER_REPLICA_ID=" + name,
	}, env...)
	return r, nil
}

// start runs a new process of the replica. Its output is appended to its log.
func (r *replica) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		select {
		case <-r.done:
		default:
			return fmt.Errorf("replica %s is already running", r.name)
		}
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "===== soak: start %d of %s at %s\n", r.starts+1, r.name, time.Now().Format(time.StampMilli))
	cmd := exec.Command(r.binary, "run")
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group (a Ctrl-C of the harness does not reach it directly: the
	// harness stops it), killed if the harness dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start replica %s: %w", r.name, err)
	}
	r.starts++
	r.cmd, r.done, r.expected, r.paused = cmd, make(chan struct{}), false, false
	r.pids = append(r.pids, cmd.Process.Pid)
	done := r.done
	go func() {
		err := cmd.Wait()
		logf.Close()
		r.mu.Lock()
		expected := r.expected
		r.mu.Unlock()
		if !expected {
			r.s.violation("replica crashed", "replica %s (pid %d) exited by itself: %v", r.name, cmd.Process.Pid, err)
		}
		close(done)
	}()
	return nil
}

// pid is the current process's id (0 when it is not running).
func (r *replica) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || !r.running() {
		return 0
	}
	return r.cmd.Process.Pid
}

// running says whether the current process has not exited; r.mu held.
func (r *replica) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// Alive says whether the replica's process runs (paused or not).
func (r *replica) alive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil && r.running()
}

// signal sends sig to the process; SIGKILL and SIGTERM mark the exit as expected.
func (r *replica) signal(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || !r.running() {
		return fmt.Errorf("replica %s is not running", r.name)
	}
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM:
		r.expected = true
	case syscall.SIGSTOP:
		r.paused = true
	case syscall.SIGCONT:
		r.paused = false
	}
	return syscall.Kill(r.cmd.Process.Pid, sig)
}

// wait waits for the current process to exit and returns its exit code (-1 when it
// was killed by a signal), or an error after timeout.
func (r *replica) wait(timeout time.Duration) (int, error) {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return 0, nil
	}
	select {
	case <-done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("replica %s did not exit within %s", r.name, timeout)
	}
	return cmd.ProcessState.ExitCode(), nil
}

// kill ends the process for good (cleanup): SIGCONT in case it is paused, SIGKILL.
func (r *replica) kill() {
	r.mu.Lock()
	cmd := r.cmd
	if cmd == nil || !r.running() {
		r.mu.Unlock()
		return
	}
	r.expected = true
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
	done := r.done
	r.mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// stopGracefully sends SIGTERM and waits for the exit (then kills).
func (r *replica) stopGracefully(timeout time.Duration) {
	if !r.alive() {
		return
	}
	_ = r.signal(syscall.SIGCONT)
	_ = r.signal(syscall.SIGTERM)
	if _, err := r.wait(timeout); err != nil {
		r.kill()
	}
}

// pidsByName maps each replica to its current process id (only running ones).
func (s *soak) pidsByName() map[string]string {
	out := map[string]string{}
	for _, r := range s.replicas {
		if pid := r.pid(); pid != 0 {
			out[r.name] = strconv.Itoa(pid)
		}
	}
	return out
}

var errStopped = errors.New("stopped")

type quiet struct{}

func (quiet) Debug(string, ...any) {}
func (quiet) Info(string, ...any)  {}
func (quiet) Warn(string, ...any)  {}
func (quiet) Error(string, ...any) {}
