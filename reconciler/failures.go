package reconciler

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
)

// failures remembers, per project, what went wrong lately and when to try again:
// exponential backoff from base, capped at max, with jitter so that projects failing
// together do not retry together. A project that has not failed for resetAfter starts
// again from base (sustained health).
type failures struct {
	mu         sync.Mutex
	base       time.Duration
	max        time.Duration
	resetAfter time.Duration
	byProject  map[uuid.UUID]*failureRecord
}

// failureRecord is a project's recent trouble.
type failureRecord struct {
	Consecutive int       // failures since the last sustained health: drives the backoff
	Crashes     int       // worker crashes and failed starts in this process: "restarts"
	Last        time.Time // when the last failure happened
	LastError   string
	NextRetry   time.Time
	Generation  int64 // the project's generation when it failed: a newer one is tried at once
	// Transient: the last failure was Temporal being unreachable; the retry is
	// brought forward as soon as Temporal answers again.
	Transient bool
}

func newFailures(base, max, resetAfter time.Duration) *failures {
	return &failures{base: base, max: max, resetAfter: resetAfter, byProject: map[uuid.UUID]*failureRecord{}}
}

// Fail records a failure of project id at generation and returns the delay before its
// retry and the updated record. crash says the project's worker failed (not just the
// reconcile).
func (f *failures) Fail(id uuid.UUID, generation int64, reason string, crash, transient bool) (time.Duration, failureRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := f.byProject[id]
	if rec == nil {
		rec = &failureRecord{}
		f.byProject[id] = rec
	}
	now := time.Now()
	if !rec.Last.IsZero() && now.Sub(rec.Last) > f.resetAfter {
		rec.Consecutive = 0
	}
	d := f.base
	for i := 0; i < rec.Consecutive && d < f.max; i++ {
		d *= 2
	}
	d = min(d, f.max)
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) // jitter: [d/2, d]
	rec.Consecutive++
	if crash {
		rec.Crashes++
	}
	rec.Last, rec.LastError, rec.NextRetry, rec.Transient = now, reason, now.Add(d), transient
	rec.Generation = max(rec.Generation, generation)
	return d, *rec
}

// Get returns project id's record (zero when it never failed).
func (f *failures) Get(id uuid.UUID) failureRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rec := f.byProject[id]; rec != nil {
		return *rec
	}
	return failureRecord{}
}

// WaitingOnTemporal lists the projects whose retry waits out a Temporal outage.
func (f *failures) WaitingOnTemporal() []uuid.UUID {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []uuid.UUID
	now := time.Now()
	for id, rec := range f.byProject {
		if rec.Transient && now.Before(rec.NextRetry) {
			ids = append(ids, id)
		}
	}
	return ids
}

// CrashedWaiting counts projects whose worker failed and that wait for a restart.
func (f *failures) CrashedWaiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, now := 0, time.Now()
	for _, rec := range f.byProject {
		if rec.Crashes > 0 && now.Before(rec.NextRetry) {
			n++
		}
	}
	return n
}

// RetryNow marks id's retry as brought forward (once per failure).
func (f *failures) RetryNow(id uuid.UUID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rec := f.byProject[id]; rec != nil {
		rec.Transient = false
		rec.NextRetry = time.Now()
	}
}

// Forget drops what is known of id: the project was stopped on purpose or deleted.
func (f *failures) Forget(id uuid.UUID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.byProject, id)
}
