package main

// The overlap sampler (as reconciler/replicas_test.go's): Temporal's pollers of a
// rotating subset of the projects' task queues, and the rows. Each worker instance
// polls under its own identity (<replica>-<hex>); the span between the first and the
// last access Temporal reports for an identity is when it served. Spans of two
// replicas' identities for one project may overlap by at most the documented 100 ms
// (README, "Several replicas"); two replicas' rows must never be live at once.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
)

// pollOverlapBound is the README's bound on two replicas polling one project at once.
const pollOverlapBound = 100 * time.Millisecond

type span struct{ first, last time.Time }

type sampler struct {
	s    *soak
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu          sync.Mutex
	spans       map[uuid.UUID]map[string]span // project -> identity -> accesses seen
	describes   int                           // DescribeTaskQueue answers
	describeErr int
	rowSamples  int
	rowBad      []string
}

func startSampler(s *soak) *sampler {
	sm := &sampler{s: s, quit: make(chan struct{}), done: make(chan struct{}), spans: map[uuid.UUID]map[string]span{}}
	go sm.run()
	return sm
}

func (sm *sampler) stop() {
	sm.once.Do(func() {
		close(sm.quit)
		<-sm.done
	})
}

func (sm *sampler) run() {
	defer close(sm.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	next := 0
	for i := 0; ; i++ {
		select {
		case <-sm.quit:
			return
		case <-tick.C:
		}
		if i%5 == 0 {
			sm.sampleRows()
		}
		for range 3 {
			p := sm.s.projects[next%len(sm.s.projects)]
			next++
			sm.samplePollers(p)
		}
	}
}

func (sm *sampler) samplePollers(p *project) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := sm.s.tc.DescribeTaskQueue(ctx, p.queue, enumspb.TASK_QUEUE_TYPE_WORKFLOW)
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if err != nil {
		sm.describeErr++
		return
	}
	sm.describes++
	if sm.spans[p.id] == nil {
		sm.spans[p.id] = map[string]span{}
	}
	for _, pl := range resp.GetPollers() {
		at := pl.GetLastAccessTime().AsTime()
		sp, ok := sm.spans[p.id][pl.GetIdentity()]
		if !ok {
			sp = span{at, at}
		}
		if at.Before(sp.first) {
			sp.first = at
		}
		if at.After(sp.last) {
			sp.last = at
		}
		sm.spans[p.id][pl.GetIdentity()] = sp
	}
}

// sampleRows looks for projects with live (starting or running) rows of two replicas.
func (sm *sampler) sampleRows() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rows, err := sm.s.pool.Query(ctx, `
		SELECT project_id, string_agg(DISTINCT replica_id, ',')
		FROM workflow_workers
		WHERE status IN ('starting', 'running')
		GROUP BY project_id HAVING count(DISTINCT replica_id) > 1`)
	if err != nil {
		return // PostgreSQL is down
	}
	defer rows.Close()
	now := time.Now()
	var bad []string
	for rows.Next() {
		var id uuid.UUID
		var replicas string
		if rows.Scan(&id, &replicas) == nil {
			bad = append(bad, fmt.Sprintf("project %s live on %s at %s", id, replicas, now.Format("15:04:05.000")))
		}
	}
	if rows.Err() != nil {
		return
	}
	sm.mu.Lock()
	sm.rowSamples++
	sm.rowBad = append(sm.rowBad, bad...)
	sm.mu.Unlock()
}

// overlap is two replicas' identities serving one project at once.
type overlap struct {
	project    uuid.UUID
	a, b       string
	sa, sb     span
	begin, end time.Time
	d          time.Duration
	during     string // the faults injected or healing while it lasted
}

func (o overlap) String() string {
	f := func(sp span) string {
		return sp.first.Local().Format("15:04:05.000") + ".." + sp.last.Local().Format("15:04:05.000")
	}
	return fmt.Sprintf("project %s polled by %s (%s) and %s (%s) at once for %s, during %s", o.project, o.a, f(o.sa), o.b, f(o.sb), o.d.Round(time.Millisecond), o.during)
}

// faultsDuring names the faults that were in effect (or healed less than 2 s before)
// between begin and end.
func (s *soak) faultsDuring(begin, end time.Time) string {
	var names []string
	if s.nem != nil {
		for _, f := range s.nem.log {
			healed := f.healed
			if healed.IsZero() {
				healed = time.Now()
			}
			if !f.injected.After(end) && !healed.Add(2*time.Second).Before(begin) {
				names = append(names, fmt.Sprintf("fault %d (%s %s %s)", f.n, f.kind, f.target(s), f.length))
			}
		}
	}
	if len(names) == 0 {
		return "no fault"
	}
	return strings.Join(names, ", ")
}

func replicaOf(identity string) string {
	if i := strings.LastIndex(identity, "-"); i > 0 {
		return identity[:i]
	}
	return identity
}

// overlaps are every pair of two replicas' identities of one project whose spans
// overlap, largest first.
func (sm *sampler) overlaps() []overlap {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	var out []overlap
	for id, spans := range sm.spans {
		identities := make([]string, 0, len(spans))
		for identity := range spans {
			identities = append(identities, identity)
		}
		sort.Strings(identities)
		for i, a := range identities {
			for _, b := range identities[i+1:] {
				if replicaOf(a) == replicaOf(b) {
					continue
				}
				sa, sb := spans[a], spans[b]
				end, begin := sa.last, sa.first
				if sb.last.Before(end) {
					end = sb.last
				}
				if sb.first.After(begin) {
					begin = sb.first
				}
				if d := end.Sub(begin); d > 0 {
					out = append(out, overlap{project: id, a: a, b: b, sa: sa, sb: sb, begin: begin, end: end, d: d,
						during: sm.s.faultsDuring(begin, end)})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].d > out[j].d })
	return out
}
