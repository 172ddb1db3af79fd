package reconciler

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// queue holds projects that need a reconcile. It is level-triggered: adding a project
// only marks it dirty, however often it is added. A project being reconciled is never
// handed out again until Done; if it was marked dirty meanwhile, Done puts it back.
type queue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	order      []uuid.UUID
	dirty      map[uuid.UUID]bool
	processing map[uuid.UUID]bool
	timers     map[uuid.UUID]*delayed
	shutdown   bool
}

type delayed struct {
	at    time.Time
	timer *time.Timer
}

func newQueue() *queue {
	q := &queue{
		dirty:      map[uuid.UUID]bool{},
		processing: map[uuid.UUID]bool{},
		timers:     map[uuid.UUID]*delayed{},
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add marks id dirty.
func (q *queue) Add(id uuid.UUID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(id)
}

func (q *queue) addLocked(id uuid.UUID) {
	if q.shutdown || q.dirty[id] {
		return
	}
	q.dirty[id] = true
	if q.processing[id] {
		return
	}
	q.order = append(q.order, id)
	q.cond.Signal()
}

// AddAfter marks id dirty once d has passed. An earlier pending AddAfter wins; an
// Add in the meantime does not cancel it.
func (q *queue) AddAfter(id uuid.UUID, d time.Duration) {
	if d <= 0 {
		q.Add(id)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	at := time.Now().Add(d)
	if t, ok := q.timers[id]; ok {
		if !t.at.After(at) {
			return
		}
		t.timer.Stop()
	}
	q.timers[id] = &delayed{at: at, timer: time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if t, ok := q.timers[id]; ok && t.at.Equal(at) {
			delete(q.timers, id)
		}
		q.addLocked(id)
	})}
}

// Get blocks until a project is dirty and not being processed, and hands it out.
// ok is false once the queue is shut down.
func (q *queue) Get() (id uuid.UUID, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if q.shutdown {
		return uuid.Nil, false
	}
	id, q.order = q.order[0], q.order[1:]
	delete(q.dirty, id)
	q.processing[id] = true
	return id, true
}

// Done ends the processing of id.
func (q *queue) Done(id uuid.UUID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, id)
	if q.dirty[id] && !q.shutdown {
		q.order = append(q.order, id)
		q.cond.Signal()
	}
}

// Pending reports when id is next due: now when it is dirty, the retry time when it
// waits for a backoff, and false when nothing is scheduled.
func (q *queue) Pending(id uuid.UUID) (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dirty[id] {
		return time.Now(), true
	}
	if t, ok := q.timers[id]; ok {
		return t.at, true
	}
	return time.Time{}, false
}

// Len is the number of dirty projects.
func (q *queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.dirty)
}

// ShutDown releases every Get and drops pending work.
func (q *queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	for id, t := range q.timers {
		t.timer.Stop()
		delete(q.timers, id)
	}
	q.cond.Broadcast()
}
