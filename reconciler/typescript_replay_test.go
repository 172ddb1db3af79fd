package reconciler

import (
	"strings"
	"testing"
)

// The replay of recorded TypeScript runs can fail too: the same history with a module
// pinned in it that starts a different child is reported as nondeterministic.
func TestReplayDetectsADivergingModule(t *testing.T) {
	replayDiverged(t, "ts-family.json", func(pin *pinned) bool {
		if pin.Language != "typescript" {
			return false
		}
		pin.Code = strings.Replace(pin.Code, "executeChild('family'", "executeChild('another'", 1)
		return true
	})
}
