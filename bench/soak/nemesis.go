package main

// The nemesis: faults one at a time, on a schedule drawn from the seed. Each fault is
// injected, lasts its drawn duration, and is healed (the replica started again, the
// proxy restored, the server started again) before the next quiet gap.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"
)

// fault kinds, in the order of the table.
const (
	faultKill      = "replica kill -9, restarted"
	faultTerm      = "replica SIGTERM, restarted"
	faultPGRestart = "PostgreSQL restart"
	faultTerminate = "every service connection terminated"
	faultPartition = "replica partitioned from PostgreSQL"
	faultTemporal  = "Temporal dev server restart"
	faultPause     = "replica paused (SIGSTOP/SIGCONT)"
)

var faultKinds = []string{faultKill, faultTerm, faultPGRestart, faultTerminate, faultPartition, faultTemporal, faultPause}

// faultNames are the kinds' names for -faults.
var faultNames = map[string]string{
	"kill": faultKill, "term": faultTerm, "pgrestart": faultPGRestart, "terminate": faultTerminate,
	"partition": faultPartition, "temporal": faultTemporal, "pause": faultPause,
}

// fault is one drawn fault.
type fault struct {
	n       int
	kind    string
	replica int           // the target, for replica faults
	length  time.Duration // how long it lasts (down, cut off, paused)
	gap     time.Duration // the quiet time before it

	injected, healed time.Time
	note             string
	err              error
}

func (f *fault) target(s *soak) string {
	switch f.kind {
	case faultKill, faultTerm, faultPartition, faultPause:
		return s.replicas[f.replica].name
	}
	return "-"
}

type nemesis struct {
	s    *soak
	rng  *rand.Rand
	bag  []string // kinds left in this round: every kind once per round, in a drawn order
	log  []*fault
	last time.Time // when the last fault healed
}

func newNemesis(s *soak) *nemesis { return &nemesis{s: s, rng: s.rngFor(1)} }

// draw is the next fault of the schedule: a function of the seed and of how many were
// drawn before, nothing else.
func (n *nemesis) draw() *fault {
	if len(n.bag) == 0 {
		n.bag = append([]string(nil), n.s.kinds...)
		n.rng.Shuffle(len(n.bag), func(i, j int) { n.bag[i], n.bag[j] = n.bag[j], n.bag[i] })
	}
	f := &fault{n: len(n.log) + 1, kind: n.bag[0], replica: n.rng.IntN(len(n.s.replicas))}
	n.bag = n.bag[1:]
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(n.rng.Int64N(int64(hi-lo)+1))
	}
	f.gap = between(n.s.o.gapMin, n.s.o.gapMax).Round(100 * time.Millisecond)
	switch f.kind {
	case faultKill:
		f.length = between(500*time.Millisecond, 5*time.Second) // down before the restart
	case faultTerm:
		f.length = between(200*time.Millisecond, 3*time.Second) // down after its exit
	case faultPGRestart:
		f.length = between(500*time.Millisecond, 8*time.Second) // PostgreSQL down
	case faultTerminate:
		f.length = 0
	case faultPartition:
		f.length = between(1*time.Second, 14*time.Second) // below and beyond the lease TTL (6 s)
	case faultTemporal:
		f.length = between(500*time.Millisecond, 5*time.Second) // Temporal down
	case faultPause:
		f.length = between(500*time.Millisecond, max(n.s.o.pauseMax, 500*time.Millisecond)) // frozen
	}
	f.length = f.length.Round(100 * time.Millisecond)
	return f
}

// run injects faults until end (a fault that begins before end is completed).
func (n *nemesis) run(ctx context.Context, end time.Time) {
	n.last = time.Now()
	for {
		f := n.draw()
		if time.Now().Add(f.gap).After(end) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(f.gap):
		}
		n.log = append(n.log, f)
		n.s.say("fault %d: %s %s for %s", f.n, f.kind, f.target(n.s), f.length)
		f.injected = time.Now()
		f.err = n.inject(ctx, f)
		f.healed = time.Now()
		n.last = f.healed
		if f.err != nil {
			n.s.violation("nemesis", "fault %d (%s %s): %v", f.n, f.kind, f.target(n.s), f.err)
		} else {
			n.s.say("fault %d healed after %s%s", f.n, f.healed.Sub(f.injected).Round(time.Millisecond), f.note)
		}
	}
}

func (n *nemesis) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// inject causes f and heals it.
func (n *nemesis) inject(ctx context.Context, f *fault) error {
	s := n.s
	switch f.kind {
	case faultKill:
		r := s.replicas[f.replica]
		if err := r.signal(syscall.SIGKILL); err != nil {
			return err
		}
		if _, err := r.wait(10 * time.Second); err != nil {
			return err
		}
		n.sleep(ctx, f.length)
		return r.start()

	case faultTerm:
		r := s.replicas[f.replica]
		t0 := time.Now()
		if err := r.signal(syscall.SIGTERM); err != nil {
			return err
		}
		code, err := r.wait(40 * time.Second)
		if err != nil {
			r.kill()
			s.violation("SIGTERM exits cleanly", "replica %s did not exit within 40 s of SIGTERM", r.name)
		} else if code != 0 {
			s.violation("SIGTERM exits cleanly", "replica %s exited %d after SIGTERM", r.name, code)
		}
		f.note = fmt.Sprintf(" (drained and exited in %s)", time.Since(t0).Round(time.Millisecond))
		n.sleep(ctx, f.length)
		return r.start()

	case faultPGRestart:
		s.pg.Stop()
		n.sleep(ctx, f.length)
		return s.pg.Start(context.WithoutCancel(ctx))

	case faultTerminate:
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var killed int
		err := s.pool.QueryRow(cctx, `
			SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
			FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
			  AND application_name <> $1`, harnessApp).Scan(&killed)
		f.note = fmt.Sprintf(" (%d backends terminated)", killed)
		return err

	case faultPartition:
		r := s.replicas[f.replica]
		r.proxy.Cut()
		n.sleep(ctx, f.length)
		return r.proxy.Restore()

	case faultTemporal:
		s.temporal.Stop()
		n.sleep(ctx, f.length)
		return s.temporal.Start(context.WithoutCancel(ctx))

	case faultPause:
		r := s.replicas[f.replica]
		if err := r.signal(syscall.SIGSTOP); err != nil {
			return err
		}
		n.sleep(ctx, f.length)
		return r.signal(syscall.SIGCONT)
	}
	return fmt.Errorf("unknown fault %q", f.kind)
}

// healAll makes sure nothing is left broken (after an interrupted fault) and returns
// when the last fault was healed.
func (n *nemesis) healAll(ctx context.Context) time.Time {
	s := n.s
	healed := false
	for _, r := range s.replicas {
		if r.proxy.Cutoff() {
			_ = r.proxy.Restore()
			healed = true
		}
		if r.alive() {
			r.mu.Lock()
			paused := r.paused
			r.mu.Unlock()
			if paused {
				_ = r.signal(syscall.SIGCONT)
				healed = true
			}
		} else {
			if err := r.start(); err != nil {
				s.violation("harness", "start %s again: %v", r.name, err)
			}
			healed = true
		}
	}
	if healed {
		n.last = time.Now()
	}
	return n.last
}
