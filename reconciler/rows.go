package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbuilder/reconciler/db"
)

// Worker statuses written to workflow_workers.status.
const (
	statusStarting = "starting"
	statusRunning  = "running"
	statusStopping = "stopping"
	statusStopped  = "stopped"
	statusFailed   = "failed"
)

// workerRow is the whole state of one workflow_workers row.
type workerRow struct {
	WorkerID   string
	ProjectID  uuid.UUID
	TaskQueue  string
	Status     string
	StartedAt  time.Time
	StoppedAt  time.Time // zero while the worker lives
	Generation int64
	LeaseTerm  int64 // the project lease's term the worker runs under (fencing)
	Metadata   map[string]any
}

// rowWriter writes workflow_workers rows behind the reconciles. Put never blocks on the
// database: it records the latest state of a row and wakes the writer, which writes
// every pending row in one statement. A write that fails stays pending and is retried,
// so the rows catch up after a database outage, and only the newest state of each row
// is written.
type rowWriter struct {
	q                  *db.Store
	host, pid, replica string
	log                *slog.Logger
	latency            prometheus.Observer

	mu      sync.Mutex
	seq     uint64
	pending map[string]pendingRow
	wake    chan struct{}

	runner
}

type pendingRow struct {
	seq      uint64    // tells a row Put again during a write from the one written
	since    time.Time // when the worker's oldest unwritten state was Put
	row      workerRow
	metadata []byte
}

func newRowWriter(q *db.Store, host, pid, replica string, log *slog.Logger, latency prometheus.Observer) *rowWriter {
	return &rowWriter{q: q, host: host, pid: pid, replica: replica, log: log, latency: latency,
		pending: map[string]pendingRow{}, wake: make(chan struct{}, 1)}
}

// Put records the new state of a row.
func (w *rowWriter) Put(row workerRow) {
	md, err := json.Marshal(row.Metadata)
	if err != nil {
		md = []byte(fmt.Sprintf(`{"error": %q}`, "metadata not encodable: "+err.Error()))
	}
	w.mu.Lock()
	w.seq++
	since := time.Now()
	if prev, ok := w.pending[row.WorkerID]; ok {
		since = prev.since // a newer state replaces an unwritten one: still waiting since then
	}
	w.pending[row.WorkerID] = pendingRow{seq: w.seq, since: since, row: row, metadata: md}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Start runs the writer until Stop.
func (w *rowWriter) Start(ctx context.Context) error {
	w.start(ctx, w.run)
	return nil
}

// Stop ends the writer (Flush first to write what is pending); idempotent.
func (w *rowWriter) Stop() {
	w.stop()
}

// run writes pending rows until ctx ends, retrying failed writes with a growing delay
// (new rows wait for the retry rather than hammering a database that is down).
func (w *rowWriter) run(ctx context.Context) {
	retry := time.Duration(0)
	for {
		if retry > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		} else {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
		}
		if err := w.flushOnce(ctx); err != nil {
			retry = min(max(2*retry, 100*time.Millisecond), 5*time.Second)
			if ctx.Err() == nil {
				w.log.Warn("write worker rows failed; will retry", "error", err, "retry_in", retry)
			}
			continue
		}
		retry = 0
	}
}

// Flush writes everything pending, retrying until it succeeds or ctx ends.
func (w *rowWriter) Flush(ctx context.Context) error {
	for {
		err := w.flushOnce(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("flush worker rows: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// flushOnce writes the rows pending now in one statement. Rows Put while it runs stay
// pending for the next round.
func (w *rowWriter) flushOnce(ctx context.Context) error {
	w.mu.Lock()
	if len(w.pending) == 0 {
		w.mu.Unlock()
		return nil
	}
	batch := make([]pendingRow, 0, len(w.pending))
	for _, p := range w.pending {
		batch = append(batch, p)
	}
	w.mu.Unlock()

	began := time.Now()
	err := w.q.UpsertWorkers(ctx, w.params(batch))
	w.latency.Observe(time.Since(began).Seconds())

	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		return err
	}
	for _, p := range batch {
		if cur, ok := w.pending[p.row.WorkerID]; ok && cur.seq == p.seq {
			delete(w.pending, p.row.WorkerID)
		}
	}
	return nil
}

func (w *rowWriter) params(batch []pendingRow) db.UpsertWorkersParams {
	n := len(batch)
	p := db.UpsertWorkersParams{
		Host: w.host, ProcessID: w.pid, Replica: w.replica,
		WorkerIds: make([]string, n), ProjectIds: make([]uuid.UUID, n), TaskQueueNames: make([]string, n),
		Statuses: make([]string, n), StartedAts: make([]time.Time, n), StoppedAts: make([]time.Time, n),
		Generations: make([]int64, n), LeaseTerms: make([]int64, n), Metadatas: make([][]byte, n),
	}
	for i, b := range batch {
		r := b.row
		p.WorkerIds[i], p.ProjectIds[i], p.TaskQueueNames[i] = r.WorkerID, r.ProjectID, r.TaskQueue
		p.Statuses[i], p.StartedAts[i], p.StoppedAts[i] = r.Status, r.StartedAt, r.StoppedAt
		p.Generations[i], p.LeaseTerms[i], p.Metadatas[i] = r.Generation, r.LeaseTerm, b.metadata
	}
	return p
}

// Pending is the number of rows not written yet.
func (w *rowWriter) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Waiting is the number of rows not written for longer than d: rows the database does
// not take, rather than rows on their way (a busy replica always has some of those).
func (w *rowWriter) Waiting(d time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, now := 0, time.Now()
	for _, p := range w.pending {
		if now.Sub(p.since) > d {
			n++
		}
	}
	return n
}
