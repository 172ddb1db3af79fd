package reconciler_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

var recordHistories = flag.Bool("record-histories", false, "run workflows on the dev server and write their histories to testdata/histories")

// historyWorkflows are the recorded runs that TestReplayRecordedHistories replays.
// Together they use every node type and field.
var historyWorkflows = map[string]string{
	"everything": `{"version": 1, "start": "greet", "nodes": {
		"greet": {"type": "activity", "activity": "echo", "input": {"message": "Hello, ${input.name}!"}, "timeout": "10s", "next": "vat"},
		"vat": {"type": "activity", "activity": "vat", "input": {"net": "${input.amount}"}, "retry": {"maximum_attempts": 3}, "next": "big"},
		"big": {"type": "condition", "if": "nodes.vat.output.gross > 100", "then": "fanout", "else": "done"},
		"fanout": {"type": "parallel", "branches": ["nap", "child"], "next": "approval"},
		"nap": {"type": "sleep", "duration": "100ms", "next": "note"},
		"note": {"type": "activity", "activity": "log", "input": "napped"},
		"child": {"type": "child_workflow", "workflow": "double", "input": {"n": "${input.amount}"}},
		"approval": {"type": "wait_signal", "signal": "approve", "timeout": "200ms", "next": "done", "on_timeout": "late"},
		"late": {"type": "return", "value": {"late": true, "fanout": "${nodes.fanout.output}"}},
		"done": {"type": "return", "value": "${nodes.greet.output.message}"}}}`,
	"double": `{"version": 1, "start": "r", "nodes": {"r": {"type": "return", "value": "${input.n * 2}"}}}`,
	"signalled": `{"version": 1, "start": "w", "nodes": {
		"w": {"type": "wait_signal", "signal": "go", "next": "r"},
		"r": {"type": "return", "value": "${signals.go}"}}}`,
	"rejects": `{"version": 1, "start": "f", "nodes": {"f": {"type": "fail", "message": "no ${input.name}"}}}`,
	// The extended format (SPEC "4, continued").
	"extended": `{"version": 1, "start": "rows", "timeout": "1m", "nodes": {
		"rows": {"type": "foreach", "items": "${input.rows}", "as": "row", "concurrency": 2, "body": "price", "next": "pick"},
		"price": {"type": "activity", "activity": "vat", "input": {"net": "${row}"}, "next": "rounded"},
		"rounded": {"type": "set", "values": {"at": "${index}", "gross": "${nodes.price.output.gross}"}},
		"pick": {"type": "switch", "cases": [{"if": "len(nodes.rows.output) > 5", "next": "many"}], "default": "charge"},
		"many": {"type": "return", "value": "many"},
		"charge": {"type": "activity", "activity": "decline", "input": {"ok": false}, "retry": {"maximum_attempts": 2, "initial_interval": "100ms"},
		           "catch": [{"errors": ["Timeout"], "next": "many"}, {"errors": ["Declined"], "next": "both"}]},
		"both": {"type": "parallel", "branches": ["child", "bad"], "catch": [{"errors": ["*"], "next": "until"}]},
		"child": {"type": "child_workflow", "workflow": "double", "input": {"n": 2}},
		"bad": {"type": "activity", "activity": "decline", "retry": {"maximum_attempts": 1}},
		"until": {"type": "sleep", "until": "${input.at}", "next": "wait"},
		"wait": {"type": "wait_signal", "any": [{"signal": "approve", "next": "done"}, {"signal": "reject", "next": "done"}], "timeout": "30s", "on_timeout": "done"},
		"done": {"type": "return", "value": {"rows": "${nodes.rows.output}", "declined": "${nodes.charge.error.cause.type}", "both": "${nodes.both.error.type}",
		          "signal": "${nodes.wait.output}", "signals": "${signals}", "type": "${workflow.type}", "attempt": "${workflow.attempt}"}}}}`,
	"counter": `{"version": 1, "start": "w", "nodes": {
		"w": {"type": "wait_signal", "signal": "go", "next": "c"},
		"c": {"type": "condition", "if": "input.n >= 2", "then": "r", "else": "again"},
		"again": {"type": "continue_as_new", "input": {"n": "${input.n + 1}"}},
		"r": {"type": "return", "value": "counted to ${input.n}"}}}`,
	"loop": `{"version": 1, "start": "each", "nodes": {
		"each": {"type": "foreach", "items": "${1..40}", "as": "n", "body": "call", "next": "again"},
		"call": {"type": "activity", "activity": "echo", "input": "${n}"},
		"again": {"type": "condition", "if": "(nodes.total?.output ?? 0) < 40", "then": "total", "else": "r"},
		"total": {"type": "set", "values": "${(nodes.total?.output ?? 0) + 20}", "next": "each"},
		"r": {"type": "return", "value": "${sum(nodes.each.output)}"}}}`,
}

// TestRecordHistories writes the histories of testdata/histories that do not exist
// yet. Record after a deliberate change of the interpreter's behaviour, next to the
// files of the old behaviour, which stay (delete a file to record it again):
//
//	go test ./reconciler -run TestRecordHistories -args -record-histories
//
// The runs go to a private dev server that suggests continuing as new past 60 events.
func TestRecordHistories(t *testing.T) {
	if !*recordHistories {
		t.Skip("a generator, not a test: pass -record-histories to write testdata/histories")
	}
	srv := testenv.PrivateTemporal(t, "limit.historyCount.suggestContinueAsNew=60")
	db := testenv.Database(t)
	tc := testenv.TemporalClientOf(t, srv.Address())
	svc := startService(t, db, func(c *reconciler.Config) { c.TemporalAddress = srv.Address() })
	var loads atomic.Int32
	svc.SetCompiledLoader(counting(svc.CompiledLoader(), &loads))
	id, queue := project(t, db.Pool)
	addComponent(t, db, id, "vat", `async function vat(x) { return {gross: x.net * 1.2} }`)
	addComponent(t, db, id, "decline", strings.Replace(declineComponent, "function charge", "function decline", 1))
	ids := map[string]uuid.UUID{}
	for name, code := range historyWorkflows {
		ids[name] = workflow(t, db.Pool, id, name, code)
	}
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	ctx := context.Background()
	path := func(file string) string { return filepath.Join("testdata", "histories", file+".json") }
	missing := func(files ...string) bool {
		for _, f := range files {
			if _, err := os.Stat(path(f)); err != nil {
				return true
			}
		}
		return false
	}
	write := func(file, workflowID, runID string) {
		hist := &historypb.History{}
		it := tc.GetWorkflowHistory(ctx, workflowID, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			hist.Events = append(hist.Events, e)
		}
		data, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(hist)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(path(file)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path(file), data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d events)", path(file), len(hist.Events))
	}
	// record runs a workflow to its end and writes the histories of its runs (a chain
	// of continue-as-new: files[0] is the first run's).
	record := func(files []string, workflowType string, input any, during func(client.WorkflowRun)) {
		if !missing(files...) {
			return
		}
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: files[0] + "-" + uuid.NewString(), TaskQueue: queue}, workflowType, input)
		if err != nil {
			t.Fatal(err)
		}
		if during != nil {
			during(run)
		}
		_ = run.Get(ctx, nil)
		runs := runsOf(t, tc, run.GetID())
		if len(runs) < len(files) {
			t.Fatalf("%s: %d runs, want %d", workflowType, len(runs), len(files))
		}
		for i, f := range files {
			first := runs[len(runs)-1-i].Events[0]
			write(f, run.GetID(), first.GetWorkflowExecutionStartedEventAttributes().GetOriginalExecutionRunId())
		}
	}
	signal := func(name string, payload any) func(client.WorkflowRun) {
		return func(run client.WorkflowRun) {
			if err := tc.SignalWorkflow(ctx, run.GetID(), "", name, payload); err != nil {
				t.Fatal(err)
			}
		}
	}
	record([]string{"everything-timeout"}, "everything", map[string]any{"name": "Ada", "amount": 500}, nil)
	record([]string{"everything-small"}, "everything", map[string]any{"name": "Ada", "amount": 5}, nil)
	record([]string{"signalled"}, "signalled", nil, signal("go", map[string]any{"ok": true}))
	record([]string{"rejects"}, "rejects", map[string]any{"name": "way"}, nil)
	record([]string{"extended"}, "extended", map[string]any{"rows": []int{10, 20, 30}, "at": time.Now().Add(4 * time.Second).UTC().Format(time.RFC3339Nano)},
		signal("reject", "Bob"))
	record([]string{"continued-1", "continued-2"}, "counter", map[string]any{"n": 1}, func(run client.WorkflowRun) {
		signal("go", 1)(run)
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			n := len(runsOf(t, tc, run.GetID()))
			return n == 2, fmt.Sprintf("%d runs", n)
		})
		signal("go", 2)(run)
	})
	// Runs pinned with search attributes (ReconcilerProjectId, ReconcilerCompiledVersion)
	// upsert them after the pin: the harness's namespace has them.
	record([]string{"indexed"}, "everything", map[string]any{"name": "Ada", "amount": 5}, nil)
	record([]string{"auto-continued-1", "auto-continued-2"}, "loop", nil, nil)
	// A continued run pinned to a version its worker no longer serves loads it.
	if missing("continued-loaded") {
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "continued-loaded-" + uuid.NewString(), TaskQueue: queue}, "counter", map[string]any{"n": 1})
		if err != nil {
			t.Fatal(err)
		}
		compileAndWaitServed(t, db, id, ids["counter"], strings.Replace(historyWorkflows["counter"], "counted to", "v2 counted to", 1))
		signal("go", 1)(run)
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			n := len(runsOf(t, tc, run.GetID()))
			return n == 2, fmt.Sprintf("%d runs", n)
		})
		signal("go", 2)(run)
		var out string
		if err := run.Get(ctx, &out); err != nil || out != "counted to 2" || loads.Load() == 0 {
			t.Fatalf("continued-loaded: %q, %v, %d loads", out, err, loads.Load())
		}
		write("continued-loaded", run.GetID(), "")
	}
}
