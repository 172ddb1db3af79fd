package reconciler_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

// A waiting TypeScript run keeps its version across a compile and a restart of the
// service, and a new process replays it (workflow time, seeded Math.random and uuid4,
// a timer) without a nondeterminism error: the values it read before the restart are
// the values it returns after.
func TestTypeScriptRunsArePinnedAndReplayAfterARestart(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	svc := startService(t, db)
	ctx := context.Background()

	id, queue := project(t, db.Pool)
	v1 := tsSource(t, "replayable.ts")
	wf := moduleWorkflow(t, db.Pool, id, "replayable", "typescript", v1)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	waiting := func() (client.WorkflowRun, string) {
		run := start(t, tc, queue, "replayable")
		var seen string
		testenv.Eventually(t, 20*time.Second, func() (bool, string) {
			var err error
			seen, err = query(t, tc, run, "seen")
			return err == nil, "query: " + seen
		})
		return run, seen
	}
	finish := func(run client.WorkflowRun, payload string) map[string]any {
		t.Helper()
		if err := tc.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), "go", payload); err != nil {
			t.Fatal(err)
		}
		got, err := result(t, run)
		if err != nil {
			t.Fatalf("run %s: %v", run.GetID(), err)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(got), &m)
		return m
	}
	compileServed := func(code string) {
		compileModule(t, db.Pool, wf, "typescript", code)
		g := generation(t, db.Pool, id)
		waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool { return r.Status == "running" && r.Generation == g })
	}

	onV1, seen := waiting()
	compileServed(strings.Replace(v1, "const label = 'v1'", "const label = 'v2'", 1))
	before, _ := latestWorker(t, db.Pool, id)
	svc.Stop()
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("stopped"))
	proc := testenv.StartProcess(t, testenv.ServiceEnv(t, db), "run")
	waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool { return r.Status == "running" && r.WorkerID != before.WorkerID })

	got := finish(onV1, "after restart")
	if got["label"] != "v1" || got["payload"] != "after restart" {
		t.Fatalf("run started on v1 and finished after a compile and a restart: %v", got)
	}
	var seenThen map[string]any
	_ = json.Unmarshal([]byte(seen), &seenThen)
	if jsonText(seenThen["before"]) != jsonText(got["before"]) || jsonText(seenThen["after"]) != jsonText(got["after"]) {
		t.Fatalf("values read before the restart %s, replayed as %v", seen, got)
	}
	next, _ := waiting()
	if got := finish(next, "new"); got["label"] != "v2" {
		t.Fatalf("new run after the compile: %v, want v2", got)
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := proc.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("service exited %d after SIGTERM", code)
	}
}

// TestRecordTypeScriptHistories writes the histories of TypeScript runs that
// TestReplayRecordedHistories replays (with -record-histories, as TestRecordHistories).
func TestRecordTypeScriptHistories(t *testing.T) {
	if !*recordHistories {
		t.Skip("a generator, not a test: pass -record-histories to write testdata/histories")
	}
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	ctx := context.Background()
	id, queue := project(t, db.Pool)
	for name, file := range map[string]string{"replayable": "replayable.ts", "handlers": "handlers.ts", "family": "family.ts",
		"cancel": "cancel.ts", "timers": "timers.ts", "misc": "misc.ts"} {
		moduleWorkflow(t, db.Pool, id, name, "typescript", tsSource(t, file))
	}
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	record := func(file string, run client.WorkflowRun, drive func()) {
		if drive != nil {
			drive()
		}
		_, _ = result(t, run)
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
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d events)", path, len(hist.Events))
	}
	signal := func(run client.WorkflowRun, name string, arg any) {
		if err := tc.SignalWorkflow(ctx, run.GetID(), run.GetRunID(), name, arg); err != nil {
			t.Fatal(err)
		}
	}
	run := start(t, tc, queue, "replayable")
	record("ts-replayable", run, func() {
		testenv.Eventually(t, 20*time.Second, func() (bool, string) { _, err := query(t, tc, run, "seen"); return err == nil, "waiting" })
		signal(run, "go", "recorded")
	})
	run = start(t, tc, queue, "handlers", 5)
	record("ts-handlers", run, func() {
		signal(run, "add", "x")
		h, err := tc.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: run.GetID(), UpdateName: "reserve", Args: []any{2},
			WaitForStage: client.WorkflowUpdateStageCompleted})
		if err != nil {
			t.Fatal(err)
		}
		_ = h.Get(ctx, nil)
		signal(run, "finish", nil)
	})
	run = start(t, tc, queue, "family", "parent", 1)
	record("ts-family", run, nil)
	run = start(t, tc, queue, "timers")
	record("ts-timers", run, func() {
		for i := 0; i < 3; i++ {
			signal(run, "poke", 1)
		}
	})
	run = start(t, tc, queue, "cancel")
	record("ts-cancel", run, func() {
		testenv.Eventually(t, 20*time.Second, func() (bool, string) {
			got, _ := query(t, tc, run, "steps")
			return strings.Contains(got, "waiting"), got
		})
		if err := tc.CancelWorkflow(ctx, run.GetID(), ""); err != nil {
			t.Fatal(err)
		}
	})
	run = start(t, tc, queue, "misc", "ok")
	record("ts-misc", run, nil)
}
