// Command bench measures every performance target of SPEC section 6 against a private
// PostgreSQL and Temporal dev server, next to the floors it cannot beat (a NOTIFY round
// trip on the same database, a bare SDK worker Start on the same server), and prints
// one table, also written to bench/results.md. `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

type options struct {
	runs     int
	projects int
	cycles   int
	compiles int
	total    int
	binary   string
	out      string
	profile  string
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 50, "samples of the single-project latency figures")
	flag.IntVar(&o.projects, "projects", 1000, "projects of the fleet-wide figures")
	flag.IntVar(&o.cycles, "cycles", 3, "repetitions of the fleet-wide figures")
	flag.IntVar(&o.compiles, "compiles", 20, "compiles under load")
	flag.IntVar(&o.total, "total", 10000, "projects in the database for the resync figure")
	flag.StringVar(&o.binary, "binary", "bin/reconciler", "the reconciler binary, for the SIGTERM figure")
	flag.StringVar(&o.out, "out", "bench/results.md", "where to write the results")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the first fleet start (the in-process service) to this file")
	flag.Parse()
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

type bench struct {
	o        options
	pool     *pgxpool.Pool
	pg       *devenv.Postgres
	temporal *devenv.Temporal
	tc       client.Client
	svc      *reconciler.Reconciler
	svcPool  *pgxpool.Pool
	rows     []row
	notes    []string

	notifyRTT  time.Duration // floors
	workerFrst time.Duration
	workerNext time.Duration
}

func say(format string, args ...any) { fmt.Fprintf(os.Stderr, "· "+format+"\n", args...) }

func run(ctx context.Context, o options) error {
	began := time.Now()
	b := &bench{o: o}
	var err error
	say("starting PostgreSQL and the Temporal dev server")
	b.pg, err = devenv.StartPostgresWith(ctx, devenv.PostgresOptions{Settings: []string{
		"shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=top",
	}})
	if err != nil {
		return err
	}
	defer b.pg.Close()
	// Sized for o.projects workers (README, "Sizing Temporal"): concurrent polls per
	// namespace, and request rates high enough for all of them to start and stop at once.
	b.temporal, err = devenv.StartTemporal(ctx, devenv.TemporalOptions{DynamicConfig: []string{
		fmt.Sprintf("frontend.namespaceCount=%d", 4*o.projects+1000),
		fmt.Sprintf("frontend.rps=%d", 20*o.projects+2400),
		fmt.Sprintf("frontend.namespaceRPS=%d", 20*o.projects+2400),
	}})
	if err != nil {
		return err
	}
	defer b.temporal.Close()
	url := b.pg.URL("postgres")
	if err := db.Migrate(ctx, url); err != nil {
		return err
	}
	if b.pool, err = db.Connect(ctx, url, 20); err != nil {
		return err
	}
	defer b.pool.Close()
	if _, err := b.pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return err
	}
	if b.tc, err = dialTemporal(ctx, b.temporal.Address()); err != nil {
		return err
	}
	defer b.tc.Close()

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"floors", b.floors},
		{"service", b.startService},
		{"desired -> running", b.desiredToRunning},
		{"compile -> serving", b.compileToServing},
		{"typescript", b.typescript},
		{"fleet", b.fleet},
		{"resync", b.resync},
		{"sigterm", b.sigterm},
	}
	for _, s := range steps {
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	b.note(fmt.Sprintf("whole run: %s", time.Since(began).Round(time.Second)))
	return b.report(ctx)
}
