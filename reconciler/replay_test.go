package reconciler

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// replayWorker is a project worker as the replayer sees it: nothing served, so every
// definition comes from the run's own history, as after a restart.
func replayWorker() *projectWorker {
	pw := &projectWorker{shared: &shared{cfg: DefaultConfig(), defs: newDefinitionCache(16)}}
	pw.served.Store(&servedSet{})
	return pw
}

// quiet drops the SDK's log lines: the negative test makes it log a panic on purpose.
var quiet = tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))

func replayer(t *testing.T) worker.WorkflowReplayer {
	t.Helper()
	r := worker.NewWorkflowReplayer()
	r.RegisterDynamicWorkflow(replayWorker().runWorkflow, workflow.DynamicRegisterOptions{})
	return r
}

// Every recorded history replays without a nondeterminism error: a change to the
// interpreter that would break runs in flight fails here. After a deliberate change,
// guard it with workflow.GetVersion and record new histories next to these
// (TestRecordHistories).
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "histories", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded histories (%v)", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := replayer(t).ReplayWorkflowHistoryFromJSONFile(quiet, f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The replay test can fail: the same history with a different definition pinned in it
// (the activity of the first node renamed) is reported as nondeterministic.
func TestReplayDetectsADivergingDefinition(t *testing.T) {
	replayDiverged(t, "everything-small.json", func(pin *pinned) bool {
		var def map[string]any
		if err := json.Unmarshal([]byte(pin.Code), &def); err != nil {
			t.Fatal(err)
		}
		def["nodes"].(map[string]any)["greet"].(map[string]any)["activity"] = "log"
		code, _ := json.Marshal(def)
		pin.Code = string(code)
		return true
	})
}

// replayDiverged replays the recorded history in testdata/histories/file with change
// applied to the code pinned in it (change says whether it changed a pin), and fails
// unless the replay reports nondeterminism.
func replayDiverged(t *testing.T, file string, change func(*pinned) bool) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "histories", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hist, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dc := converter.GetDefaultDataConverter()
	changed := false
	for _, e := range hist.Events {
		m := e.GetMarkerRecordedEventAttributes()
		if m == nil || m.GetMarkerName() != "SideEffect" {
			continue
		}
		var pin pinned
		if err := dc.FromPayloads(m.GetDetails()["data"], &pin); err != nil || !change(&pin) {
			continue
		}
		p, err := dc.ToPayloads(pin)
		if err != nil {
			t.Fatal(err)
		}
		m.GetDetails()["data"] = p
		changed = true
	}
	if !changed {
		t.Fatalf("no pinned code to change found in %s", file)
	}
	err = replayer(t).ReplayWorkflowHistory(quiet, hist)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "nondetermin") {
		t.Fatalf("replay of a diverging %s: %v, want a nondeterminism error", file, err)
	}
}
