package devenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// child is a server process started by devenv. It runs in its own process group and
// gets SIGKILL if the process that started it dies, so nothing outlives a test binary
// or `reconciler dev`, even on kill -9.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// startChild runs name with args, its output appended to logPath.
func startChild(name string, args []string, dir, logPath string, cred *syscall.Credential) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", logPath, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{}), log: logf}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// errExited is what waitReady returns when the child died before it was ready.
var errExited = errors.New("exited")

// waitReady polls ready until it succeeds, the child exits, or a minute passes.
func (c *child) waitReady(ctx context.Context, ready func() error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-c.done:
			return errExited
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not ready: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig, waits up to grace, then kills.
func (c *child) stop(sig syscall.Signal, grace time.Duration) {
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.log.Close()
}
