package component

import "slices"

// scheduler decides which waiting call gets the next free sandbox: each project has
// its own FIFO queue, projects take turns (the one served longest ago first), and a
// project with perProject calls running waits for one of them to end. So a project
// with 50 calls queued holds at most perProject sandboxes, and a project with one
// call waits at most for one call of each project ahead of it in the turn, never
// behind another project's queue. It is not safe for concurrent use (the pool
// holds its lock).
type scheduler struct {
	perProject int
	queues     map[string][]*waiter
	turn       []string // projects with waiting calls, served longest ago first
	running    map[string]int
}

// waiter is a call waiting for a sandbox.
type waiter struct {
	project string
	ready   chan struct{} // closed when child or err is set
	child   *child
	err     error
}

func newScheduler(perProject int) *scheduler {
	return &scheduler{perProject: max(perProject, 1), queues: map[string][]*waiter{}, running: map[string]int{}}
}

// push queues w behind its project's other calls.
func (s *scheduler) push(w *waiter) {
	if len(s.queues[w.project]) == 0 {
		s.turn = append(s.turn, w.project)
	}
	s.queues[w.project] = append(s.queues[w.project], w)
}

// next takes the call that should run now, and counts it as running; nil when every
// waiting project is at its cap (or nothing waits).
func (s *scheduler) next() *waiter {
	for i, project := range s.turn {
		if s.running[project] >= s.perProject {
			continue
		}
		q := s.queues[project]
		w := q[0]
		q[0] = nil
		s.queues[project] = q[1:]
		s.turn = slices.Delete(s.turn, i, i+1)
		if len(s.queues[project]) > 0 {
			s.turn = append(s.turn, project) // its next call waits for the others' turn
		} else {
			delete(s.queues, project)
		}
		s.running[project]++
		return w
	}
	return nil
}

// done counts a running call of project as ended.
func (s *scheduler) done(project string) {
	if s.running[project]--; s.running[project] <= 0 {
		delete(s.running, project)
	}
}

// remove takes w out of its queue (its caller gave up); false if it is not queued.
func (s *scheduler) remove(w *waiter) bool {
	q := s.queues[w.project]
	i := slices.Index(q, w)
	if i < 0 {
		return false
	}
	s.queues[w.project] = slices.Delete(q, i, i+1)
	if len(s.queues[w.project]) == 0 {
		delete(s.queues, w.project)
		s.turn = slices.DeleteFunc(s.turn, func(p string) bool { return p == w.project })
	}
	return true
}

// drain takes every waiting call out.
func (s *scheduler) drain() []*waiter {
	var all []*waiter
	for _, p := range s.turn {
		all = append(all, s.queues[p]...)
	}
	s.queues, s.turn = map[string][]*waiter{}, nil
	return all
}

// waiting is the number of queued calls.
func (s *scheduler) waiting() int {
	n := 0
	for _, q := range s.queues {
		n += len(q)
	}
	return n
}
