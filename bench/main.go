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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/reconciler"
	"github.com/flowbuilder/reconciler/reconciler/component"
)

type options struct {
	runs     int
	projects int
	cycles   int
	compiles int
	total    int
	scale    int
	binary   string
	out      string
	profile  string
	only     string
}

func main() {
	component.RunChildIfRequested() // the service's component sandboxes re-execute the bench
	var o options
	flag.IntVar(&o.runs, "runs", 50, "samples of the single-project latency figures")
	flag.IntVar(&o.projects, "projects", 1000, "projects of the fleet-wide figures")
	flag.IntVar(&o.cycles, "cycles", 3, "repetitions of the fleet-wide figures")
	flag.IntVar(&o.compiles, "compiles", 20, "compiles under load")
	flag.IntVar(&o.total, "total", 10000, "projects in the database for the resync figure")
	flag.IntVar(&o.scale, "scale", 5000, "projects on one replica for the scale figure (0: skip it)")
	flag.StringVar(&o.binary, "binary", "bin/reconciler", "the reconciler binary, for the SIGTERM figure")
	flag.StringVar(&o.out, "out", "bench/results.md", "where to write the results")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the first fleet start (the in-process service) to this file")
	flag.StringVar(&o.only, "only", "", "run only these steps (comma-separated, e.g. tenants; the service is always started)")
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

	namespaceCount int // the dev server's frontend.namespaceCount

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
	most := max(o.projects, o.scale)
	b.namespaceCount = 4*most + 1000
	b.temporal, err = devenv.StartTemporal(ctx, devenv.TemporalOptions{DynamicConfig: []string{
		fmt.Sprintf("frontend.namespaceCount=%d", b.namespaceCount),
		fmt.Sprintf("frontend.rps=%d", 20*most+2400),
		fmt.Sprintf("frontend.namespaceRPS=%d", 20*most+2400),
	}})
	if err != nil {
		return err
	}
	defer b.temporal.Close()
	url := b.pg.URL("postgres")
	if err := db.Migrate(ctx, url); err != nil {
		return err
	}
	if b.pool, err = db.Connect(ctx, url+"&application_name=bench", 20); err != nil {
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
		{"tenants", b.tenants},
		{"typescript", b.typescript},
		{"fleet", b.fleet},
		{"resync", b.resync},
		{"sigterm", b.sigterm},
		{"scale", b.scale},
	}
	for _, s := range steps {
		if o.only != "" && s.name != "service" && !slices.Contains(strings.Split(o.only, ","), s.name) {
			continue
		}
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if b.svc != nil {
		b.svc.Stop() // when the sigterm step did not run
	}
	b.note(fmt.Sprintf("whole run: %s", time.Since(began).Round(time.Second)))
	return b.report(ctx)
}
