package reconciler_test

import (
	"testing"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
