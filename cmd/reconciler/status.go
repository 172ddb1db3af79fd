package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler"
)

// status is `reconciler status [--json]`: every project's desired vs actual state,
// from the project_worker_health view, unhealthy projects first.
func status(ctx context.Context, cfg reconciler.Config, args []string, out io.Writer) error {
	asJSON := false
	for _, a := range args {
		switch a {
		case "--json", "-json":
			asJSON = true
		default:
			return usageError{fmt.Errorf("status: unknown argument %q (usage: reconciler status [--json])", a)}
		}
	}
	pool, err := db.Connect(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	q := db.New(pool)
	rows, err := q.ProjectHealth(ctx)
	if err != nil {
		return fmt.Errorf("read project_worker_health: %w", err)
	}
	problems, err := q.ReplicaProblems(ctx)
	if err != nil {
		return fmt.Errorf("read reconciler_replicas: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []db.ProjectHealthRow{}
		}
		return enc.Encode(rows)
	}
	for _, p := range problems {
		fmt.Fprintf(out, "PROBLEM on replica %s (%s): %s\n\n", p.ReplicaID, p.Host, p.Problem)
	}
	return statusTable(out, rows, time.Now())
}

func statusTable(out io.Writer, rows []db.ProjectHealthRow, now time.Time) error {
	healthy := 0
	for _, r := range rows {
		if r.IsHealthy {
			healthy++
		}
	}
	fmt.Fprintf(out, "%d projects, %d healthy, %d not\n\n", len(rows), healthy, len(rows)-healthy)
	if len(rows) == 0 {
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PROJECT\tID\tDESIRED\tACTUAL\tHEALTHY\tGENERATION\tHOST\tREPLICA\tHEARTBEAT\tRESTARTS\tLAST ERROR")
	for _, r := range rows {
		gen := strconv.FormatInt(r.GenerationDesired, 10)
		if r.WorkerID != "" {
			gen += "/" + strconv.FormatInt(r.GenerationObserved, 10)
		}
		heartbeat := "-"
		if r.LastHeartbeat != nil {
			heartbeat = now.Sub(*r.LastHeartbeat).Round(time.Second).String() + " ago"
		}
		healthy := "yes"
		if !r.IsHealthy {
			healthy = "NO"
		}
		lastError := oneLine(r.LastError, 60)
		if r.NextRetryAt != "" {
			lastError = "retry at " + r.NextRetryAt + ": " + lastError
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			oneLine(r.ProjectName, 30), r.ProjectID.String()[:8], r.DesiredStatus, r.ActualStatus, healthy, gen,
			dash(r.Host), dash(r.OwnerReplica), heartbeat, r.Restarts, dash(lastError))
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max-1] + "…"
	}
	return s
}
