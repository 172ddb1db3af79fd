package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

//go:embed demo.sql
var demoSQL string

const demoQueue = "demo-greeting-queue"

// dev is `reconciler dev` (what `make run` calls): the service with a private
// PostgreSQL and Temporal dev server when none is configured, and a demo project.
func dev(ctx context.Context, cfg reconciler.Config, out io.Writer) error {
	log := cfg.NewLogger()
	if _, set := os.LookupEnv("RECONCILER_HTTP_ALLOW_PRIVATE"); !set {
		cfg.HTTPAllowPrivate = true // local development talks to local services
	}
	if _, set := os.LookupEnv("RECONCILER_OPS_ADDR"); !set {
		cfg.OpsAddr = "127.0.0.1:0" // a free port: 9090 may well be taken on a laptop
	}
	if cfg.DatabaseURL == "" {
		began := time.Now()
		pg, err := devenv.StartPostgres(ctx)
		if err != nil {
			return fmt.Errorf("start private PostgreSQL: %w", err)
		}
		defer pg.Close()
		cfg.DatabaseURL = pg.URL("postgres")
		fmt.Fprintf(out, "PostgreSQL  %s  (private, started in %s)\n", cfg.DatabaseURL, time.Since(began).Round(time.Millisecond))
	}
	uiURL := ""
	if _, set := os.LookupEnv("TEMPORAL_ADDRESS"); !set {
		began := time.Now()
		t, err := devenv.StartTemporal(ctx, devenv.TemporalOptions{UI: true, SearchAttributes: reconciler.SearchAttributes()})
		if err != nil {
			return fmt.Errorf("start Temporal dev server: %w", err)
		}
		defer t.Close()
		cfg.TemporalAddress = t.Address()
		uiURL = t.UIURL() + "/namespaces/" + url.PathEscape(cfg.TemporalNamespace) + "/workflows"
		fmt.Fprintf(out, "Temporal    %s  (dev server, started in %s)\n", cfg.TemporalAddress, time.Since(began).Round(time.Millisecond))
		fmt.Fprintf(out, "Temporal UI %s\n", uiURL)
	}

	if err := db.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	pool, err := db.Connect(ctx, cfg.DatabaseURL, cfg.DatabaseMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	r, err := reconciler.New(cfg, pool, log)
	if err != nil {
		return err
	}
	if uiURL == "" {
		// Someone else's Temporal: register the search attributes if it lets us, before
		// the service asks which ones the namespace has.
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if added, err := reconciler.RegisterSearchAttributes(rctx, r.Temporal(), cfg.TemporalNamespace); err != nil {
			log.Warn("search attributes not registered: runs cannot be found by project and version", "error", err)
		} else if len(added) > 0 {
			log.Info("search attributes registered", "namespace", cfg.TemporalNamespace, "added", added)
		}
		cancel()
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	defer r.Stop()
	if addr := r.OpsAddr(); addr != "" {
		fmt.Fprintf(out, "Fleet       http://%s/  (every project's state, refreshing)\n", addr)
		fmt.Fprintf(out, "Ops         http://%s/metrics  /healthz  /readyz\n", addr)
	}

	began := time.Now()
	if _, err := pool.Exec(ctx, demoSQL); err != nil {
		return fmt.Errorf("load demo project: %w", err)
	}
	if err := waitRunning(ctx, pool, demoQueue); err != nil {
		return err
	}
	fmt.Fprintf(out, "Demo worker running on task queue %s (%s after desired_status = 'running')\n", demoQueue, time.Since(began).Round(time.Millisecond))

	result, run, err := runDemo(ctx, r.Temporal())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Demo workflow greet({\"name\": \"World\"}) returned: %s\n", result)
	var project string
	if err := pool.QueryRow(ctx, `SELECT id::text FROM projects WHERE task_queue_name = $1`, demoQueue).Scan(&project); err != nil {
		return fmt.Errorf("read demo project: %w", err)
	}
	query := fmt.Sprintf("%s = '%s'", reconciler.SearchAttributeProject, project)
	if uiURL != "" {
		fmt.Fprintf(out, "Demo run    %s/%s/%s/history\n", uiURL, url.PathEscape(run.GetID()), url.PathEscape(run.GetRunID()))
		fmt.Fprintf(out, "Its runs    %s?query=%s\n", uiURL, url.QueryEscape(query))
	}
	fmt.Fprintf(out, "            temporal workflow list --address %s --query \"%s\"\n", cfg.TemporalAddress, query)
	fmt.Fprintf(out, "Reconciling until Ctrl-C. Try: psql %s -c \"select * from workflow_workers\"\n", cfg.DatabaseURL)
	<-ctx.Done()
	return nil
}

func waitRunning(ctx context.Context, pool *pgxpool.Pool, queue string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var status, lastError string
		err := pool.QueryRow(ctx, `
			SELECT ww.status, coalesce(ww.metadata->>'error', '')
			FROM workflow_workers ww JOIN projects p ON p.id = ww.project_id
			WHERE p.task_queue_name = $1
			ORDER BY ww.started_at DESC LIMIT 1`, queue).Scan(&status, &lastError)
		if err == nil && status == "running" {
			return nil
		}
		select {
		case <-ctx.Done():
			if lastError != "" {
				return fmt.Errorf("demo worker did not start: %s", lastError)
			}
			return errors.New("demo worker did not reach running within a minute")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func runDemo(ctx context.Context, tc client.Client) (string, client.WorkflowRun, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        fmt.Sprintf("demo-greet-%d", time.Now().UnixNano()),
		TaskQueue: demoQueue,
	}, "greet", map[string]any{"name": "World"})
	if err != nil {
		return "", nil, fmt.Errorf("start demo workflow: %w", err)
	}
	var result string
	if err := run.Get(ctx, &result); err != nil {
		return "", nil, fmt.Errorf("demo workflow: %w", err)
	}
	return result, run, nil
}
