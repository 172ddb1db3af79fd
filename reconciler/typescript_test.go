package reconciler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

// tsSource is one of the example workflows under script/testdata/workflows (the same
// files the type declarations are checked against).
func tsSource(t testing.TB, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("script", "testdata", "workflows", file))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// moduleWorkflow creates an active workflow with one compiled version in language.
func moduleWorkflow(t testing.TB, pool *pgxpool.Pool, projectID uuid.UUID, name, language, code string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := pool.QueryRow(context.Background(), `INSERT INTO workflows (project_id, name, status) VALUES ($1, $2, 'active') RETURNING id`,
		projectID, name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	compileModule(t, pool, id, language, code)
	return id
}

func compileModule(t testing.TB, pool *pgxpool.Pool, workflowID uuid.UUID, language, code string) {
	t.Helper()
	exec(t, pool, `INSERT INTO compiled_workflows (workflow_id, language, workflow_code) VALUES ($1, $2, $3)`, workflowID, language, code)
}

func start(t *testing.T, tc client.Client, queue, workflowType string, args ...any) client.WorkflowRun {
	t.Helper()
	run, err := tc.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: workflowType + "-" + uuid.NewString(), TaskQueue: queue, WorkflowExecutionTimeout: 2 * time.Minute,
	}, workflowType, args...)
	if err != nil {
		t.Fatalf("start %s: %v", workflowType, err)
	}
	return run
}

func result(t *testing.T, run client.WorkflowRun) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var v any
	err := run.Get(ctx, &v)
	return jsonText(v), err
}

func query(t *testing.T, tc client.Client, run client.WorkflowRun, name string, args ...any) (string, error) {
	t.Helper()
	v, err := tc.QueryWorkflow(context.Background(), run.GetID(), run.GetRunID(), name, args...)
	if err != nil {
		return "", err
	}
	var out any
	if err := v.Get(&out); err != nil {
		return "", err
	}
	return jsonText(out), nil
}

// Every item of the TypeScript API (SPEC 4b), compiled through SQL and run on the dev
// server by one service: activities with options and retries (built-ins, a TypeScript
// component, a JavaScript one, a local activity), fan-out, timers, conditions,
// signals, queries, updates with a validator, children, continue-as-new,
// cancellation and scopes, patches, workflowInfo and failures as a client sees them.
func TestTypeScriptWorkflowsRunOnTemporal(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok": true}`)
	}))
	t.Cleanup(api.Close) // after the parallel subtests

	id, queue := project(t, db.Pool)
	exec(t, db.Pool, `INSERT INTO components (project_id, name, implementation_language, implementation_code) VALUES
		($1, 'vat', 'typescript', 'function vat(x: { net: number }): { gross: number } { return { gross: Math.round(x.net * 1.2 * 100) / 100 } }'),
		($1, 'boom', 'javascript', 'function boom(x) { throw new Error("boom " + x.key) }')`, id)
	for name, file := range map[string]string{"activities": "activities.ts", "timers": "timers.ts", "handlers": "handlers.ts",
		"family": "family.ts", "cancel": "cancel.ts", "misc": "misc.ts"} {
		moduleWorkflow(t, db.Pool, id, name, "typescript", tsSource(t, file))
	}
	moduleWorkflow(t, db.Pool, id, "plain", "javascript", `import { sleep } from '@temporalio/workflow';
export default async function plain(...args) { await sleep(1); return args.length }`)
	moduleWorkflow(t, db.Pool, id, "broken", "typescript", "import fs from 'fs';\nexport default async function broken() { return fs }")
	setDesired(t, db.Pool, id, "running")
	row := waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	errs, _ := row.Metadata["workflow_errors"].(map[string]any)
	if len(errs) != 1 || !strings.Contains(fmt.Sprint(errs["broken"]), `version 1: 1:16: import "fs" is not allowed`) {
		t.Fatalf("workflow_errors = %v, want only broken's import, with its position", errs)
	}

	t.Run("activities", func(t *testing.T) {
		t.Parallel()
		got, err := result(t, start(t, tc, queue, "activities", map[string]any{"net": 100, "url": api.URL}))
		want := `{"body":{"ok":true},"echoed":{"local":true},"fanout":"abc","gross":120,"notRetried":"boom NON_RETRYABLE_FAILURE Error","retried":"MAXIMUM_ATTEMPTS_REACHED","status":200}`
		if err != nil || got != want {
			t.Fatalf("got %s, %v\nwant %s", got, err, want)
		}
	})
	t.Run("javascript and all arguments", func(t *testing.T) {
		t.Parallel()
		if got, err := result(t, start(t, tc, queue, "plain", 1, "two", nil)); err != nil || got != "3" {
			t.Fatalf("got %s, %v", got, err)
		}
	})
	t.Run("timers and conditions", func(t *testing.T) {
		t.Parallel()
		run := start(t, tc, queue, "timers")
		for i := 0; i < 3; i++ {
			if err := tc.SignalWorkflow(context.Background(), run.GetID(), "", "poke", 1); err != nil {
				t.Fatal(err)
			}
		}
		got, err := result(t, run)
		if err != nil || got != `{"early":false,"elapsedAtLeast150":true,"fired":"fired","pokes":3}` {
			t.Fatalf("got %s, %v", got, err)
		}
		if !historyHas(t, tc, run.GetID(), enumspb.EVENT_TYPE_TIMER_FIRED) {
			t.Error("no durable timer in the history")
		}
	})
	t.Run("signals queries updates", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		run := start(t, tc, queue, "handlers", 5)
		for _, item := range []string{"x", "y"} {
			if err := tc.SignalWorkflow(ctx, run.GetID(), "", "add", item); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, 20*time.Second, func() (bool, string) {
			got, err := query(t, tc, run, "items")
			return got == `["x","y"]`, fmt.Sprintf("items %s, %v", got, err)
		})
		if got, err := query(t, tc, run, "countWith", "abc"); err != nil || got != "5" {
			t.Errorf("countWith: %s, %v", got, err)
		}
		update := func(n int) (string, error) {
			h, err := tc.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: run.GetID(), UpdateName: "reserve",
				Args: []any{n}, WaitForStage: client.WorkflowUpdateStageCompleted})
			if err != nil {
				return "", err
			}
			var v any
			err = h.Get(ctx, &v)
			return jsonText(v), err
		}
		if _, err := update(10); err == nil || !strings.Contains(err.Error(), "only 5 left") {
			t.Errorf("update over the stock: %v, want the validator's rejection", err)
		}
		if got, err := update(2); err != nil || got != "3" {
			t.Errorf("update: %s, %v", got, err)
		}
		if err := tc.SignalWorkflow(ctx, run.GetID(), "", "finish", nil); err != nil {
			t.Fatal(err)
		}
		if got, err := result(t, run); err != nil || got != `{"items":["x","y"],"stock":3}` {
			t.Fatalf("got %s, %v", got, err)
		}
	})
	t.Run("children and continue-as-new", func(t *testing.T) {
		t.Parallel()
		run := start(t, tc, queue, "family", "parent", 20)
		got, err := result(t, run)
		want := `{"childId":"handle-","direct":40,"parent":"family","viaHandle":42}`
		if err != nil || len(got) != len(want)+36 || got[:len(`{"childId":"handle-`)] != want[:len(`{"childId":"handle-`)] {
			t.Fatalf("got %s, %v, want %s (and a uuid)", got, err, want)
		}
		if got, err := result(t, start(t, tc, queue, "family", "count", 0)); err != nil || got != `{"continuedFrom":true,"counted":3}` {
			t.Fatalf("continue-as-new: %s, %v", got, err)
		}
	})
	t.Run("cancellation", func(t *testing.T) {
		t.Parallel()
		run := start(t, tc, queue, "cancel")
		testenv.Eventually(t, 20*time.Second, func() (bool, string) {
			got, err := query(t, tc, run, "steps")
			return strings.Contains(got, "waiting"), fmt.Sprintf("steps %s, %v", got, err)
		})
		if got, _ := query(t, tc, run, "steps"); got != `["timeout cancelled: true","scope cancelled: true","waiting"]` {
			t.Errorf("steps: %s", got)
		}
		if err := tc.CancelWorkflow(context.Background(), run.GetID(), ""); err != nil {
			t.Fatal(err)
		}
		_, err := result(t, run)
		var canceled *temporal.CanceledError
		if !errors.As(err, &canceled) {
			t.Fatalf("run ended with %v, want cancelled", err)
		}
		if !historyHas(t, tc, run.GetID(), enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) {
			t.Error("the cleanup activity of the non-cancellable scope did not run")
		}
	})
	t.Run("patches, info and failures", func(t *testing.T) {
		t.Parallel()
		run := start(t, tc, queue, "misc", "ok")
		got, err := result(t, run)
		want := fmt.Sprintf(`{"attempt":1,"historyLength":true,"namespace":"default","patched":true,"startTime":true,"taskQueue":"%s","uuid":36,"workflowId":"%s","workflowType":"misc"}`, queue, run.GetID())
		if err != nil || got != want {
			t.Fatalf("got %s, %v\nwant %s", got, err, want)
		}
		if !historyHas(t, tc, run.GetID(), enumspb.EVENT_TYPE_MARKER_RECORDED) {
			t.Error("patched left no version marker")
		}
		for mode, typ := range map[string]string{"reject": "OrderRejected", "create": "Created", "typeerror": "TypeError", "custom": "QuotaExceeded"} {
			_, err := result(t, start(t, tc, queue, "misc", mode))
			if app := failureOfType(err, typ); app == nil {
				t.Errorf("%s: %v, want an application failure of type %s", mode, err, typ)
			} else if mode == "reject" && (!app.NonRetryable() || !strings.Contains(app.Error(), "order 7 rejected")) {
				t.Errorf("reject: %v", app)
			}
		}
	})
}

func jsonText(v any) string {
	if v == nil {
		return "null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
