package lease

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

func projectIDs(n int) []uuid.UUID {
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	return ids
}

func replicasNamed(capacity int, names ...string) []replicaInfo {
	out := make([]replicaInfo, len(names))
	for i, n := range names {
		out[i] = replicaInfo{ID: n, Capacity: capacity}
	}
	return out
}

func loads(a map[uuid.UUID]string) map[string]int {
	l := map[string]int{}
	for _, r := range a {
		l[r]++
	}
	return l
}

func TestAssignIsEvenWithinBounds(t *testing.T) {
	for trial := 0; trial < 200; trial++ {
		ids := projectIDs(60)
		a := assign(ids, replicasNamed(1000, "a", "b", "c"))
		if len(a) != 60 {
			t.Fatalf("assigned %d of 60", len(a))
		}
		for r, n := range loads(a) {
			if n < 14 || n > 26 {
				t.Fatalf("trial %d: replica %s got %d of 60 (outside ±30%% of 20): %v", trial, r, n, loads(a))
			}
		}
	}
}

func TestAssignIsDeterministic(t *testing.T) {
	ids := projectIDs(500)
	reversed := make([]uuid.UUID, len(ids))
	for i, id := range ids {
		reversed[len(ids)-1-i] = id
	}
	a := assign(ids, replicasNamed(1000, "a", "b", "c"))
	b := assign(reversed, replicasNamed(1000, "c", "a", "b"))
	for id, r := range a {
		if b[id] != r {
			t.Fatalf("project %s: %s vs %s for the same inputs in another order", id, r, b[id])
		}
	}
}

func TestAssignMovesFewWhenReplicasComeAndGo(t *testing.T) {
	ids := projectIDs(3000)
	before := assign(ids, replicasNamed(10000, "a", "b", "c"))
	after := assign(ids, replicasNamed(10000, "a", "b", "c", "d"))
	moved := 0
	for id := range before {
		if before[id] != after[id] {
			moved++
		}
	}
	// Ideal: a quarter moves to d. Bounded loads add a little.
	if moved > 3000*35/100 {
		t.Errorf("adding a 4th replica moved %d of 3000 projects (ideal 750)", moved)
	}
	removed := assign(ids, replicasNamed(10000, "a", "b"))
	moved = 0
	for id, r := range before {
		if r != "c" && removed[id] != r {
			moved++
		}
	}
	if moved > 3000*10/100 {
		t.Errorf("removing replica c moved %d projects that were not on c", moved)
	}
	t.Logf("loads with 4: %v", loads(after))
}

func TestAssignRespectsCapacity(t *testing.T) {
	ids := projectIDs(100)
	a := assign(ids, []replicaInfo{{ID: "small", Capacity: 10}, {ID: "big", Capacity: 1000}})
	l := loads(a)
	if l["small"] > 10 || len(a) != 100 {
		t.Fatalf("loads %v, %d assigned", l, len(a))
	}
	full := assign(ids, replicasNamed(30, "a", "b"))
	if len(full) != 60 || loads(full)["a"] != 30 {
		t.Fatalf("over capacity: %d assigned, loads %v; want 60, 30 each", len(full), loads(full))
	}
}

func TestOwnershipRenewalAndFencing(t *testing.T) {
	o := newOwnership("me", 100)
	p1, p2, p3, p4, p5 := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	long := time.Now().Add(-time.Minute)
	o.setLease(p1, Lease{Term: 1, Expiry: time.Now().Add(time.Minute), Since: long})
	o.setLease(p2, Lease{Term: 4, Expiry: time.Now().Add(time.Minute), Since: long})
	sent := time.Now()
	o.setLease(p4, Lease{Term: 2, Expiry: time.Now().Add(time.Minute)}) // taken while the renewal ran
	o.setLease(p5, Lease{Term: 3, Expiry: time.Now().Add(time.Minute), Since: long})
	o.dropLease(p5) // given up while the renewal ran
	expiry := time.Now().Add(10 * time.Second)
	lost, found := o.renewed(map[uuid.UUID]int64{p1: 1, p3: 7, p5: 3}, sent, expiry, true)
	if fmt.Sprint(lost) != fmt.Sprint([]uuid.UUID{p2}) || fmt.Sprint(found) != fmt.Sprint([]uuid.UUID{p3}) {
		t.Fatalf("lost %v found %v; want p2 lost and p3 found (p4 and p5 changed after the renewal was sent)", lost, found)
	}
	if _, ok := o.holds(p4); !ok {
		t.Fatal("a lease taken after the renewal was sent was dropped")
	}
	if _, ok := o.holds(p5); ok {
		t.Fatal("a lease given up after the renewal was sent came back")
	}
	if l, ok := o.holds(p1); !ok || !l.Expiry.Equal(expiry) {
		t.Fatalf("p1 lease %+v", l)
	}
	if got := o.expiring(expiry.Add(-time.Second)); len(got) != 0 {
		t.Fatalf("expiring a second early: %v", got)
	}
	if got := o.expiring(expiry.Add(-Margin / 2)); len(got) != 2 {
		t.Fatalf("within the margin: %v, want the two renewed leases", got)
	}
	o.renewed(map[uuid.UUID]int64{p1: 1, p3: 7}, time.Now(), expiry, false)
	if got := o.expiring(expiry.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("a replica that does not fence gave up %v", got)
	}
}

func TestOwnershipFollowsTheAssignment(t *testing.T) {
	o := newOwnership("b", 100)
	ids := projectIDs(30)
	running := map[uuid.UUID]bool{}
	for _, id := range ids {
		running[id] = true
	}
	o.replaceRunning(running)
	o.reassign()
	for _, id := range ids {
		if !o.mine(id) {
			t.Fatal("alone, a replica owns everything")
		}
	}
	o.setOthers([]replicaInfo{{ID: "a", Capacity: 100}})
	changed := o.reassign()
	mine := 0
	for _, id := range ids {
		if o.mine(id) {
			mine++
		}
	}
	if len(changed) != 30-mine || mine == 0 || mine == 30 {
		t.Fatalf("with a second replica: %d mine, %d changed", mine, len(changed))
	}
	o.setDraining()
	for _, id := range ids {
		if o.mine(id) {
			t.Fatal("a draining replica owns a project")
		}
	}
}
