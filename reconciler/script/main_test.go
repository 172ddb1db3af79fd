package script

import (
	"os"
	"testing"

	"github.com/flowbuilder/reconciler/internal/isolate"
)

// TestMain lets the test binary be the isolate child that bundles modules.
func TestMain(m *testing.M) {
	isolate.RunChildIfRequested()
	os.Exit(m.Run())
}
