package lease

import (
	"hash/fnv"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
)

// replicaInfo is a live replica taking part in the assignment.
type replicaInfo struct {
	ID       string
	Capacity int
}

// ownership is this replica's view of who should run what: the live replicas, the
// projects that should run, the resulting assignment, and the leases it holds. The
// assignment is a pure function of the first two, so replicas that see the same
// inputs agree; where their views differ for a moment, the lease decides.
type ownership struct {
	me       string
	capacity int

	mu       sync.Mutex
	others   []replicaInfo // live replicas other than this one, sorted by id
	running  map[uuid.UUID]bool
	owner    map[uuid.UUID]string
	stale    bool // running or others changed since the assignment was computed
	leases   map[uuid.UUID]Lease
	dropped  map[uuid.UUID]time.Time // leases given up lately, and when
	draining bool
	fences   bool      // what the last successful renewal told the others
	peerSeen time.Time // when another live replica was last seen
}

func newOwnership(me string, capacity int) *ownership {
	return &ownership{
		me:       me,
		capacity: capacity,
		running:  map[uuid.UUID]bool{},
		owner:    map[uuid.UUID]string{},
		leases:   map[uuid.UUID]Lease{},
		dropped:  map[uuid.UUID]time.Time{},
	}
}

// replicas lists the replicas taking part in the assignment, this one included unless
// it drains.
func (o *ownership) replicasLocked() []replicaInfo {
	all := append([]replicaInfo{}, o.others...)
	if !o.draining {
		all = append(all, replicaInfo{ID: o.me, Capacity: o.capacity})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return all
}

// mine says whether project id is assigned to this replica.
func (o *ownership) mine(id uuid.UUID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.draining {
		return false
	}
	if owner, ok := o.owner[id]; ok && !o.stale {
		return owner == o.me
	}
	// Not in the last assignment (a project just set running): its first choice.
	return topChoice(id, o.replicasLocked()) == o.me
}

// setRunning records whether a project should run, as a reconcile has just read it.
func (o *ownership) setRunning(id uuid.UUID, running bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running[id] != running {
		if running {
			o.running[id] = true
		} else {
			delete(o.running, id)
		}
		o.stale = true
	}
}

// replaceRunning records the full set of projects that should run (a resync).
func (o *ownership) replaceRunning(running map[uuid.UUID]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(running) != len(o.running) {
		o.stale = true
	} else {
		for id := range running {
			if !o.running[id] {
				o.stale = true
				break
			}
		}
	}
	o.running = running
}

// setOthers records the other live replicas.
func (o *ownership) setOthers(others []replicaInfo) {
	sort.Slice(others, func(i, j int) bool { return others[i].ID < others[j].ID })
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(others) > 0 {
		o.peerSeen = time.Now()
	}
	if len(others) != len(o.others) {
		o.stale = true
	} else {
		for i := range others {
			if others[i] != o.others[i] {
				o.stale = true
				break
			}
		}
	}
	o.others = others
}

// reassign recomputes the assignment if its inputs changed and returns the projects
// whose owner changed to or from this replica.
func (o *ownership) reassign() []uuid.UUID {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.stale {
		return nil
	}
	o.stale = false
	projects := make([]uuid.UUID, 0, len(o.running))
	for id := range o.running {
		projects = append(projects, id)
	}
	next := assign(projects, o.replicasLocked())
	var changed []uuid.UUID
	for id, owner := range next {
		if (o.owner[id] == o.me) != (owner == o.me) {
			changed = append(changed, id)
		}
	}
	for id, owner := range o.owner {
		if _, still := next[id]; !still && owner == o.me {
			changed = append(changed, id)
		}
	}
	o.owner = next
	return changed
}

// holds returns the lease this replica holds on project id.
func (o *ownership) holds(id uuid.UUID) (Lease, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	l, ok := o.leases[id]
	return l, ok
}

// all is a copy of the leases held.
func (o *ownership) all() map[uuid.UUID]Lease {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[uuid.UUID]Lease, len(o.leases))
	for id, l := range o.leases {
		out[id] = l
	}
	return out
}

func (o *ownership) setLease(id uuid.UUID, l Lease) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if l.Since.IsZero() {
		l.Since = time.Now()
	}
	o.leases[id] = l
	delete(o.dropped, id)
}

func (o *ownership) dropLease(id uuid.UUID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.leases, id)
	o.dropped[id] = time.Now()
}

// renewed applies a successful renewal sent at sent, which gives every lease it
// extended the expiry expiry. It returns the leases lost (held here, not there) and
// found (there, not here: after a restart or a fence). A renewal cannot know of a
// lease taken or given up after it was sent: those are left as they are.
func (o *ownership) renewed(terms map[uuid.UUID]int64, sent, expiry time.Time, fences bool) (lost, found []uuid.UUID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.fences = fences
	for id, l := range o.leases {
		if term, ok := terms[id]; (!ok || term != l.Term) && l.Since.Before(sent) {
			lost = append(lost, id)
			delete(o.leases, id)
		}
	}
	for id, term := range terms {
		if at, ok := o.dropped[id]; ok && !at.Before(sent) {
			continue // given up while the renewal ran: the database will know shortly
		}
		l, ok := o.leases[id]
		if !ok {
			found = append(found, id)
			l.Since = sent
		}
		if l.Term == term || !ok {
			l.Term, l.Expiry = term, expiry
			o.leases[id] = l
		}
	}
	for id, at := range o.dropped {
		if time.Since(at) > time.Minute {
			delete(o.dropped, id)
		}
	}
	return lost, found
}

// expiring lists the leases to give up now: when this replica fences, those within
// Margin of their local expiry.
func (o *ownership) expiring(now time.Time) []uuid.UUID {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.fences {
		return nil
	}
	var ids []uuid.UUID
	for id, l := range o.leases {
		if now.After(l.Expiry.Add(-Margin)) {
			ids = append(ids, id)
		}
	}
	return ids
}

func (o *ownership) setDraining() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.draining = true
	o.stale = true
}

func (o *ownership) isDraining() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.draining
}

// counts reports how many leases this replica holds and how many replicas take part.
func (o *ownership) counts() (leases, replicas int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.leases), len(o.replicasLocked())
}

// shouldFence says whether this replica must stop its workers when it cannot renew:
// it has seen another replica within window, which could take its projects over. A
// replica that blinks out of view for a moment does not turn fencing off.
func (o *ownership) shouldFence(window time.Duration) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.peerSeen.IsZero() && time.Since(o.peerSeen) < window
}

// assign spreads projects over replicas: each project goes to the replica that ranks
// it highest (rendezvous hashing) among those below their cap, where the cap is the
// replica's capacity and at most 10% over an even share. Projects are taken in id
// order, so every replica computes the same assignment from the same inputs; a replica
// joining or leaving moves about 1/N of the projects. Projects beyond every cap are
// left out.
func assign(projects []uuid.UUID, replicas []replicaInfo) map[uuid.UUID]string {
	out := make(map[uuid.UUID]string, len(projects))
	if len(replicas) == 0 || len(projects) == 0 {
		return out
	}
	sort.Slice(projects, func(i, j int) bool {
		return string(projects[i][:]) < string(projects[j][:])
	})
	even := int(math.Ceil(1.1 * float64(len(projects)) / float64(len(replicas))))
	load := make(map[string]int, len(replicas))
	var spill []uuid.UUID
	for _, p := range projects {
		if r := pick(p, replicas, load, func(ri replicaInfo) int { return min(ri.Capacity, even) }); r != "" {
			out[p] = r
			load[r]++
		} else {
			spill = append(spill, p)
		}
	}
	// What did not fit under the even share goes wherever capacity remains.
	for _, p := range spill {
		if r := pick(p, replicas, load, func(ri replicaInfo) int { return ri.Capacity }); r != "" {
			out[p] = r
			load[r]++
		}
	}
	return out
}

// pick is project p's highest-ranked replica whose load is below limit.
func pick(p uuid.UUID, replicas []replicaInfo, load map[string]int, limit func(replicaInfo) int) string {
	best, bestScore := "", uint64(0)
	for _, r := range replicas {
		if load[r.ID] >= limit(r) {
			continue
		}
		if s := score(p, r.ID); best == "" || s > bestScore {
			best, bestScore = r.ID, s
		}
	}
	return best
}

// topChoice is p's highest-ranked replica, whatever the loads.
func topChoice(p uuid.UUID, replicas []replicaInfo) string {
	return pick(p, replicas, nil, func(replicaInfo) int { return math.MaxInt })
}

// score is the rendezvous weight of project p on replica r.
func score(p uuid.UUID, r string) uint64 {
	h := fnv.New64a()
	h.Write(p[:])
	h.Write([]byte(r))
	x := h.Sum64()
	// splitmix64 finaliser: FNV alone mixes the last bytes poorly.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
