package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/devenv"
)

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
	binaryDir  string
)

// Binary builds cmd/reconciler once per package run and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() {
		root, err := devenv.ModuleRoot()
		if err != nil {
			binaryErr = err
			return
		}
		binaryDir, err = os.MkdirTemp("", "reconciler-bin-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(binaryDir, "reconciler")
		cmd := exec.Command("go", "build", "-o", binaryPath, "./cmd/reconciler")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binaryErr = fmt.Errorf("go build ./cmd/reconciler: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// Process is the reconciler binary running as a child process.
type Process struct {
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
	err  error
}

// StartProcess runs the binary with args and exactly env (plus PATH and HOME). It is
// killed when t ends if it still runs.
func StartProcess(t testing.TB, env []string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p := &Process{cmd: cmd, out: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, p.Output())
		}
	})
	return p
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Wait waits for the process to exit and returns its exit code, or fails t.
func (p *Process) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %s; output:\n%s", timeout, p.Output())
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("process: %v", p.err)
	}
	return 0
}

// Output is everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// SyncBuffer collects what several goroutines write (a process's output, logs).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ServiceEnv is the environment of a `reconciler run` against db and the shared dev
// server, with intervals short enough for tests.
func ServiceEnv(t testing.TB, db *DB, extra ...string) []string {
	return append([]string{
		"DATABASE_URL=" + db.URL,
		"TEMPORAL_ADDRESS=" + TemporalAddress(t),
		"RECONCILER_HEARTBEAT_INTERVAL=1s",
		"RECONCILER_POLL_INTERVAL=5s",
		"RECONCILER_HTTP_ALLOW_PRIVATE=true",
		"RECONCILER_LOG_LEVEL=debug",
		"RECONCILER_OPS_ADDR=127.0.0.1:0",
	}, extra...)
}
