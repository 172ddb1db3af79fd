package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler"
)

const usage = `usage: reconciler <command>

commands:
  run                 run the service (needs DATABASE_URL)
  dev                 private Postgres and Temporal when not configured, a demo project, then run
  migrate up          apply every pending migration
  migrate down N      revert the N newest migrations
  migrate version     print the applied migration version
  status [--json]     every project: desired vs actual, health, generations, last error
  search-attributes   register the search attributes runs set (ReconcilerProjectId,
                      ReconcilerCompiledVersion) in TEMPORAL_NAMESPACE at TEMPORAL_ADDRESS
  validate FILE...    check compiled workflow definitions offline; every problem with its node id

configuration is read from the environment: see README.md`

// usageError is a mistake in the command line or the configuration: exit code 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New(usage)}
	}
	if args[0] == "validate" {
		return validate(args[1:], out)
	}
	cfg, err := reconciler.LoadConfig()
	if err != nil {
		return usageError{fmt.Errorf("invalid configuration: %w", err)}
	}
	switch args[0] {
	case "run":
		if err := cfg.RequireDatabase(); err != nil {
			return usageError{fmt.Errorf("invalid configuration: %w", err)}
		}
		return serve(ctx, cfg)
	case "dev":
		return dev(ctx, cfg, out)
	case "migrate":
		if err := cfg.RequireDatabase(); err != nil {
			return usageError{fmt.Errorf("invalid configuration: %w", err)}
		}
		return migrate(ctx, cfg, args[1:], out)
	case "status":
		if err := cfg.RequireDatabase(); err != nil {
			return usageError{fmt.Errorf("invalid configuration: %w", err)}
		}
		return status(ctx, cfg, args[1:], out)
	case "search-attributes":
		return searchAttributes(ctx, cfg, out)
	case "help", "-h", "--help":
		fmt.Fprintln(out, usage)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q\n%s", args[0], usage)}
}

// serve is `reconciler run`: the service until ctx ends.
func serve(ctx context.Context, cfg reconciler.Config) error {
	log := cfg.NewLogger()
	pool, err := db.Connect(ctx, cfg.DatabaseURL, cfg.DatabaseMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	r, err := reconciler.New(cfg, pool, log)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

func migrate(ctx context.Context, cfg reconciler.Config, args []string, out io.Writer) error {
	m, err := db.NewMigrator(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer m.Close()
	switch {
	case len(args) == 1 && args[0] == "up":
		if err := m.Up(); err != nil {
			return err
		}
	case len(args) == 2 && args[0] == "down":
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 {
			return usageError{fmt.Errorf("migrate down: N must be a positive number, got %q", args[1])}
		}
		if err := m.Down(n); err != nil {
			return err
		}
	case len(args) == 1 && args[0] == "version":
	default:
		return usageError{errors.New("usage: reconciler migrate up | down N | version")}
	}
	v, dirty, ok, err := m.Version()
	if err != nil {
		return err
	}
	switch {
	case !ok:
		fmt.Fprintln(out, "no migration applied")
	case dirty:
		fmt.Fprintf(out, "version %d (dirty: a migration failed halfway; fix it, then `migrate force` with the upstream CLI)\n", v)
	default:
		fmt.Fprintf(out, "version %d\n", v)
	}
	return nil
}

// searchAttributes is `reconciler search-attributes`: registers the service's search
// attributes in the namespace (those it lacks), so that runs can be listed by project
// and compiled version. Running workers start setting them within a minute.
func searchAttributes(ctx context.Context, cfg reconciler.Config, out io.Writer) error {
	tc, err := client.Dial(client.Options{HostPort: cfg.TemporalAddress, Namespace: cfg.TemporalNamespace,
		Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s: %w", cfg.TemporalAddress, err)
	}
	defer tc.Close()
	added, err := reconciler.RegisterSearchAttributes(ctx, tc, cfg.TemporalNamespace)
	if err != nil {
		return err
	}
	if len(added) == 0 {
		fmt.Fprintf(out, "namespace %s already has %s\n", cfg.TemporalNamespace, strings.Join(reconciler.SearchAttributes(), ", "))
		return nil
	}
	fmt.Fprintf(out, "namespace %s: added %s (of %s)\n", cfg.TemporalNamespace, strings.Join(added, ", "), strings.Join(reconciler.SearchAttributes(), ", "))
	return nil
}
