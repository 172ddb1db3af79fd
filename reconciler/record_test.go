package reconciler_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

var recordHistories = flag.Bool("record-histories", false, "run workflows on the dev server and write their histories to testdata/histories")

// historyWorkflows are the recorded runs that TestReplayRecordedHistories replays.
// Together they use every node type.
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
}

// TestRecordHistories regenerates testdata/histories. Run it after a deliberate change
// of the interpreter's behaviour, and keep the old files for the old behaviour:
//
//	go test ./reconciler -run TestRecordHistories -args -record-histories
func TestRecordHistories(t *testing.T) {
	if !*recordHistories {
		t.Skip("a generator, not a test: pass -record-histories to write testdata/histories")
	}
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	id, queue := project(t, db.Pool)
	addComponent(t, db, id, "vat", `async function vat(x) { return {gross: x.net * 1.2} }`)
	for name, code := range historyWorkflows {
		workflow(t, db.Pool, id, name, code)
	}
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	ctx := context.Background()
	record := func(file, workflowType string, input any, signal func(client.WorkflowRun)) {
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: file + "-" + uuid.NewString(), TaskQueue: queue}, workflowType, input)
		if err != nil {
			t.Fatal(err)
		}
		if signal != nil {
			signal(run)
		}
		_ = run.Get(ctx, nil)
		hist := &historypb.History{}
		it := tc.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
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
		path := filepath.Join("testdata", "histories", file+".json")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d events)", path, len(hist.Events))
	}
	record("everything-timeout", "everything", map[string]any{"name": "Ada", "amount": 500}, nil)
	record("everything-small", "everything", map[string]any{"name": "Ada", "amount": 5}, nil)
	record("signalled", "signalled", nil, func(run client.WorkflowRun) {
		if err := tc.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), "go", map[string]any{"ok": true}); err != nil {
			t.Fatal(err)
		}
	})
	record("rejects", "rejects", map[string]any{"name": "way"}, nil)
	// Runs pinned with search attributes (ReconcilerProjectId, ReconcilerCompiledVersion)
	// upsert them after the pin: the harness's namespace has them.
	record("indexed", "everything", map[string]any{"name": "Ada", "amount": 5}, nil)
}
