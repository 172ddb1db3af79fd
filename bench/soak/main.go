// Command soak is a chaos soak of the reconciler: three replicas of the built binary
// share a private PostgreSQL and a Temporal dev server whose state is a file (so that
// Temporal itself can be restarted); a workload keeps starting workflows, compiling new
// versions, flipping desired_status and restarting projects; a nemesis injects faults
// on a seeded random schedule (kill -9, SIGTERM, PostgreSQL restart, every connection
// terminated, a replica partitioned from PostgreSQL, Temporal restart, SIGSTOP). After
// the faults it sets every project running, lets it settle, checks the invariants and
// prints a table. `make soak` runs the short mode, `make soak-long` the 30-minute one.
//
// The run's seed is printed; -seed replays the same fault schedule (kinds, targets,
// durations and gaps; timings against the service differ from run to run).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/devenv"
)

type options struct {
	seed        uint64
	duration    time.Duration // the fault phase
	projects    int
	replicas    int
	rate        float64 // workflow starts per second
	gapMin      time.Duration
	gapMax      time.Duration
	convergeMax time.Duration // the bound on convergence after the last fault
	settle      time.Duration // how long runs may take to finish after the faults
	out         string
	keep        bool
	faults      string
	pauseMax    time.Duration
}

func main() {
	var o options
	flag.Uint64Var(&o.seed, "seed", 0, "seed of the fault schedule and the workload (0: a new one, printed)")
	flag.DurationVar(&o.duration, "duration", 90*time.Second, "how long faults are injected")
	flag.IntVar(&o.projects, "projects", 80, "projects")
	flag.IntVar(&o.replicas, "replicas", 3, "replicas of the service")
	flag.Float64Var(&o.rate, "rate", 3, "workflow runs started per second")
	flag.DurationVar(&o.gapMin, "gap-min", 2*time.Second, "shortest quiet time between two faults")
	flag.DurationVar(&o.gapMax, "gap-max", 6*time.Second, "longest quiet time between two faults")
	flag.DurationVar(&o.convergeMax, "converge-bound", 60*time.Second, "every project must reach its desired state within this after the last fault")
	flag.DurationVar(&o.settle, "settle", 3*time.Minute, "how long the workload's runs may take to complete after the faults")
	flag.StringVar(&o.out, "out", "", "also write the results table (markdown) to this file")
	flag.BoolVar(&o.keep, "keep", false, "keep the logs folder even when every invariant holds")
	flag.StringVar(&o.faults, "faults", "all", "the fault kinds to inject, comma-separated: kill, term, pgrestart, terminate, partition, temporal, pause (or all)")
	flag.DurationVar(&o.pauseMax, "pause-max", 4500*time.Millisecond, "longest SIGSTOP of a replica; beyond lease TTL - renew interval - 0.5 s (4.5 s here) its leases can be taken over while it is frozen (see bench/soak-results.md, Findings)")
	flag.Parse()
	kinds, err := parseFaults(o.faults)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano()%1_000_000_000) + 1
	}
	if o.replicas < 2 || o.projects < 1 || o.gapMax < o.gapMin {
		fmt.Fprintln(os.Stderr, "soak: need at least 2 replicas, 1 project and gap-min <= gap-max")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	s := &soak{o: o, kinds: kinds, began: time.Now(), violations: map[string][]string{}}
	err = s.run(ctx)
	stop()
	code := s.finish(err)
	os.Exit(code)
}

// soak is one run of the harness.
type soak struct {
	o     options
	kinds []string // the fault kinds drawn from
	began time.Time
	dir   string // logs: one per replica, events.log, the servers' folders are devenv's

	binary   string
	pg       *devenv.Postgres
	temporal *devenv.Temporal
	pool     *pgxpool.Pool // the harness's own connections, straight to PostgreSQL
	tc       client.Client
	replicas []*replica
	projects []*project

	wl      *workload
	nem     *nemesis
	sampler *sampler
	res     results

	cleanups []func()

	mu         sync.Mutex
	events     *os.File
	violations map[string][]string // invariant -> what broke it
}

// say prints a progress line (stderr) and keeps it in events.log.
func (s *soak) say(format string, args ...any) {
	line := fmt.Sprintf("%s %6.1fs  %s", time.Now().Format("15:04:05.000"), time.Since(s.began).Seconds(), fmt.Sprintf(format, args...))
	fmt.Fprintln(os.Stderr, line)
	s.mu.Lock()
	if s.events != nil {
		fmt.Fprintln(s.events, line)
	}
	s.mu.Unlock()
}

// violation records that an invariant failed; the run exits non-zero naming it.
func (s *soak) violation(invariant, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.violations[invariant] = append(s.violations[invariant], msg)
	n := len(s.violations[invariant])
	s.mu.Unlock()
	if n <= 20 {
		s.say("VIOLATION %s: %s", invariant, msg)
	}
}

func (s *soak) defer_(f func()) { s.cleanups = append(s.cleanups, f) }

func (s *soak) run(ctx context.Context) (err error) {
	s.dir, err = os.MkdirTemp("", "reconciler-soak-")
	if err != nil {
		return err
	}
	if s.events, err = os.Create(filepath.Join(s.dir, "events.log")); err != nil {
		return err
	}
	s.say("seed %d (replay: -seed %d); logs in %s", s.o.seed, s.o.seed, s.dir)
	s.say("building cmd/reconciler")
	if s.binary, err = buildBinary(ctx, s.dir); err != nil {
		return err
	}
	s.say("starting PostgreSQL and a persistent Temporal dev server")
	if s.pg, err = devenv.StartPostgres(ctx); err != nil {
		return err
	}
	s.defer_(s.pg.Close)
	if s.temporal, err = startTemporal(ctx, s.o.projects); err != nil {
		return err
	}
	s.defer_(s.temporal.Close)
	url := s.pg.URL("postgres") + "&application_name=" + harnessApp
	if err := db.Migrate(ctx, url); err != nil {
		return err
	}
	if s.pool, err = db.Connect(ctx, url, 20); err != nil {
		return err
	}
	s.defer_(s.pool.Close)
	if s.tc, err = dialTemporal(ctx, s.temporal.Address()); err != nil {
		return err
	}
	s.defer_(s.tc.Close)

	if err := s.createProjects(ctx); err != nil {
		return err
	}
	for i := range s.o.replicas {
		r, err := newReplica(s, fmt.Sprintf("r%d", i+1), replicaEnv)
		if err != nil {
			return err
		}
		s.replicas = append(s.replicas, r)
		s.defer_(r.proxy.Close)
		s.defer_(func() { r.stopGracefully(5 * time.Second) })
		if err := r.start(); err != nil {
			return err
		}
	}
	s.say("%d replicas started (pids %v); setting %d projects running", len(s.replicas), s.pidsByName(), len(s.projects))
	if err := s.setAllRunning(ctx, time.Minute); err != nil {
		return err
	}
	if _, err := s.waitConverged(ctx, 2*time.Minute, time.Now()); err != nil {
		return fmt.Errorf("before any fault: %w", err)
	}
	s.say("every project runs; workload and nemesis for %s", s.o.duration)

	s.sampler = startSampler(s)
	s.defer_(s.sampler.stop)
	s.wl = startWorkload(ctx, s)
	s.defer_(s.wl.stop)
	s.nem = newNemesis(s)
	faultsEnd := time.Now().Add(s.o.duration)
	s.nem.run(ctx, faultsEnd)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	lastFault := s.nem.healAll(ctx)
	s.say("faults over (%d injected); the last one healed at %s", len(s.nem.log), lastFault.Format("15:04:05.000"))
	s.wl.halt()
	s.say("workload stopped: %d runs started", s.wl.count())
	return s.check(ctx, lastFault)
}

// finish stops everything, prints the results and returns the exit code.
func (s *soak) finish(err error) int {
	if err != nil {
		s.violation("harness", "%v", err)
	}
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	if s.nem != nil {
		s.report()
	}
	var failed []string
	for inv := range s.violations {
		failed = append(failed, inv)
	}
	sort.Strings(failed)
	if s.events != nil {
		s.events.Close()
	}
	passed := 0
	for _, inv := range invariants {
		if len(s.violations[inv]) == 0 {
			passed++
		}
	}
	defer fmt.Printf("soak: %d passed, %d failed\n", passed, len(failed))
	if len(failed) == 0 {
		fmt.Printf("\nsoak: every invariant holds (seed %d)\n", s.o.seed)
		if s.dir != "" && !s.o.keep {
			_ = os.RemoveAll(s.dir)
		} else if s.dir != "" {
			fmt.Printf("logs kept in %s\n", s.dir)
		}
		return 0
	}
	fmt.Printf("\nsoak: FAILED (seed %d; replay with -seed %d): %s\n", s.o.seed, s.o.seed, strings.Join(failed, "; "))
	for _, inv := range failed {
		v := s.violations[inv]
		fmt.Printf("- %s (%d):\n", inv, len(v))
		for i, m := range v {
			if i == 10 {
				fmt.Printf("    ... %d more\n", len(v)-10)
				break
			}
			fmt.Printf("    %s\n", m)
		}
	}
	if s.dir != "" {
		fmt.Printf("logs kept in %s (events.log, r*.log)\n", s.dir)
	}
	return 1
}

// rngFor is a random source derived from the seed, one per purpose, so that the fault
// schedule does not depend on how much the workload drew.
func (s *soak) rngFor(purpose uint64) *rand.Rand {
	return rand.New(rand.NewPCG(s.o.seed, purpose))
}

// invariants are what the soak checks (the names its violations are recorded under;
// "nemesis" and "harness" are the harness's own failures).
var invariants = []string{
	"workflows", "pinned version", "double polling", "convergence", "probe",
	"no live row without a live replica", "leases consistent", "replica crashed",
	"SIGTERM exits cleanly", "no panic",
}

// harnessApp is the application_name of the harness's own connections (spared when
// the nemesis terminates the service's backends).
const harnessApp = "reconciler-soak"

// parseFaults turns -faults into fault kinds, in the table's order.
func parseFaults(spec string) ([]string, error) {
	if spec == "all" {
		return faultKinds, nil
	}
	want := map[string]bool{}
	for _, name := range strings.Split(spec, ",") {
		kind, ok := faultNames[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("-faults: unknown fault %q (kill, term, pgrestart, terminate, partition, temporal, pause)", name)
		}
		want[kind] = true
	}
	var kinds []string
	for _, k := range faultKinds {
		if want[k] {
			kinds = append(kinds, k)
		}
	}
	return kinds, nil
}
