package db_test

import (
	"context"
	"testing"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/internal/testenv"
)

func TestPruneKeepsRecentRowsAndEachProjectsNewest(t *testing.T) {
	t.Parallel()
	d := testenv.Database(t)
	p := d.Pool
	a, b := newProject(t, p), newProject(t, p)
	mustExec(t, p, `
		INSERT INTO workflow_workers (worker_id, project_id, task_queue_name, status, started_at, stopped_at) VALUES
		  ('a-old-1', $1, 'q', 'stopped', now() - interval '30 days', now() - interval '30 days'),
		  ('a-old-2', $1, 'q', 'failed',  now() - interval '20 days', now() - interval '20 days'),
		  ('a-live',  $1, 'q', 'running', now() - interval '10 days', NULL),
		  ('b-old',   $2, 'q', 'stopped', now() - interval '40 days', now() - interval '40 days'),
		  ('b-new',   $2, 'q', 'stopped', now() - interval '1 hour',  now() - interval '1 hour'),
		  ('gone',    NULL, 'q', 'stopped', now() - interval '40 days', now() - interval '40 days')`, a, b)
	c := newProject(t, p)
	mustExec(t, p, `INSERT INTO workflow_workers (worker_id, project_id, task_queue_name, status, started_at, stopped_at)
		VALUES ('c-only', $1, 'q', 'stopped', now() - interval '50 days', now() - interval '50 days')`, c)

	n, err := db.New(p).PruneWorkers(context.Background(), 7*24*3600)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := p.Query(context.Background(), `SELECT worker_id FROM workflow_workers ORDER BY worker_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var kept []string
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		kept = append(kept, id)
	}
	want := []string{"a-live", "b-new", "c-only"}
	if n != 4 || len(kept) != len(want) || kept[0] != want[0] || kept[1] != want[1] || kept[2] != want[2] {
		t.Fatalf("pruned %d, kept %v; want 4 pruned, %v kept (live rows, recent rows, and a project's only row)", n, kept, want)
	}
}
