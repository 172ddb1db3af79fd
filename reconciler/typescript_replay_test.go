package reconciler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
)

// The replay of recorded TypeScript runs can fail too: the same history with a module
// pinned in it that starts a different child is reported as nondeterministic.
func TestReplayDetectsADivergingModule(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "histories", "ts-family.json"))
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
		if err := dc.FromPayloads(m.GetDetails()["data"], &pin); err != nil || pin.Language != "typescript" {
			continue
		}
		pin.Code = strings.Replace(pin.Code, "executeChild('family'", "executeChild('another'", 1)
		p, err := dc.ToPayloads(pin)
		if err != nil {
			t.Fatal(err)
		}
		m.GetDetails()["data"] = p
		changed = true
	}
	if !changed {
		t.Fatal("no pinned module found in the history")
	}
	err = replayer(t).ReplayWorkflowHistory(quiet, hist)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "nondetermin") {
		t.Fatalf("replay of a diverging module: %v, want a nondeterminism error", err)
	}
}
