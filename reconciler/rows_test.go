package reconciler

import (
	"testing"
	"time"
)

// Rows on their way are not counted as waiting; a row whose newer states keep
// replacing it unwritten waits since its first one.
func TestRowsWaiting(t *testing.T) {
	w := newRowWriter(nil, "h", "1", "r", nil, nil)
	w.Put(workerRow{WorkerID: "a", Status: "starting"})
	if n := w.Waiting(time.Hour); n != 0 {
		t.Fatalf("a row Put just now waits: %d", n)
	}
	first := w.pending["a"].since
	w.Put(workerRow{WorkerID: "a", Status: "running"})
	if got := w.pending["a"].since; !got.Equal(first) {
		t.Fatalf("a replaced row waits since %v, want its first state's %v", got, first)
	}
	w.Put(workerRow{WorkerID: "b", Status: "running"})
	w.mu.Lock()
	p := w.pending["a"]
	p.since = time.Now().Add(-2 * time.Second)
	w.pending["a"] = p
	w.mu.Unlock()
	if n, all := w.Waiting(time.Second), w.Pending(); n != 1 || all != 2 {
		t.Fatalf("waiting %d of %d pending, want 1 of 2", n, all)
	}
}
