package script

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// A warm pool hands out ready VMs bound to the caller's host, makes more, and stops
// with nothing left running.
func TestWarmPool(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // other tests' activities may still run
	w := NewWarm(DefaultLimits, 2)
	_ = w.Start(context.Background())
	calls := 0
	host := func(args []any) (any, error) {
		if args[0] == "now" {
			calls++
			return "42", nil
		}
		return nil, nil
	}
	first, err := w.vm(DefaultLimits, host) // makes its own, starts the filler
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	// The filler makes two more in the background: poll with a deadline.
	deadline, tick := time.After(10*time.Second), time.NewTicker(5*time.Millisecond)
	defer tick.Stop()
	for len(w.ready) < 2 {
		select {
		case <-deadline:
			t.Fatalf("%d ready VMs after 10s, want 2", len(w.ready))
		case <-tick.C:
		}
	}
	vm, err := w.vm(DefaultLimits, host)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := vm.Eval("Date.now()", 0); err != nil || v != 42 || calls != 1 {
		t.Fatalf("Date.now() = %v, %v after %d host calls: the taken VM must answer through the caller's host", v, err, calls)
	}
	vm.Close()
	w.Stop()
	w.Stop()
}
