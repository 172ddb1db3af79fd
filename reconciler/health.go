package reconciler

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pollHealth watches the long polls of every worker, by worker identity, through a
// gRPC interceptor on the shared Temporal client. Start() returning nil says nothing
// about whether a worker can poll, and the SDK retries most poll errors for ever
// without telling anyone: this is how the service finds out.
type pollHealth struct {
	mu      sync.Mutex
	workers map[string]*pollState
	conn    atomic.Pointer[grpc.ClientConn] // the shared client's connection, seen by the interceptor

	// What the service asks of Temporal: requests sent (long polls apart), and long polls
	// sent and held open now (Temporal caps these per namespace: frontend.namespaceCount).
	requests, polls, pollsHeld atomic.Int64
}

type pollState struct {
	failingSince time.Time // zero while the last poll succeeded
	lastErr      error
	permanent    bool // an error that retrying will not fix (auth, bad request, no namespace)
	everOK       bool // a poll of this worker has succeeded at least once
	// exhausted is when a poll last failed with ResourceExhausted (the namespace's poll
	// limit, or rate limits): while some polls get through and others are refused the
	// worker flips between failing and not, but it is not healthy.
	exhausted    time.Time
	exhaustedErr error
}

func newPollHealth() *pollHealth {
	return &pollHealth{workers: map[string]*pollState{}}
}

// watch starts tracking a worker identity; forget stops.
func (h *pollHealth) watch(identity string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.workers[identity] = &pollState{}
}

func (h *pollHealth) forget(identity string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.workers, identity)
}

// state returns a copy of what is known of identity's polls.
func (h *pollHealth) state(identity string) pollState {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.workers[identity]; ok {
		return *s
	}
	return pollState{}
}

// interceptor records the outcome of every poll call.
func (h *pollHealth) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		h.conn.Store(cc)
		var identity string
		switch r := req.(type) {
		case *workflowservice.PollWorkflowTaskQueueRequest:
			identity = r.GetIdentity()
		case *workflowservice.PollActivityTaskQueueRequest:
			identity = r.GetIdentity()
		default:
			h.requests.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		h.polls.Add(1)
		h.pollsHeld.Add(1)
		err := invoker(ctx, method, req, reply, cc, opts...)
		h.pollsHeld.Add(-1)
		if err != nil && ctx.Err() != nil {
			return err // the worker is stopping: not a health signal
		}
		h.record(identity, err)
		return err
	}
}

func (h *pollHealth) record(identity string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.workers[identity]
	if !ok {
		return
	}
	if err == nil {
		*s = pollState{everOK: true, exhausted: s.exhausted, exhaustedErr: s.exhaustedErr}
		return
	}
	if status.Code(err) == codes.ResourceExhausted {
		s.exhausted, s.exhaustedErr = time.Now(), err
	}
	if status.Code(err) == codes.DeadlineExceeded && s.failingSince.IsZero() {
		return // a long poll that outlived its deadline once is normal
	}
	if s.failingSince.IsZero() {
		s.failingSince = time.Now()
	}
	s.lastErr = err
	s.permanent = permanentPollError(err)
}

// resetConnectBackoff makes the shared connection try to reconnect at once, instead
// of at the end of its backoff (up to 10 s): Temporal answers again.
func (h *pollHealth) resetConnectBackoff() {
	if cc := h.conn.Load(); cc != nil {
		cc.ResetConnectBackoff()
	}
}

// transientError says whether err looks like Temporal being unreachable or overloaded
// (as opposed to refusing this worker).
func transientError(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// permanentPollError tells errors that retrying will not fix from outages.
func permanentPollError(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.Unimplemented, codes.OutOfRange:
		return true
	}
	return false
}

// pollErrorText is the one-line form of a poll error for workflow_workers.metadata.
func pollErrorText(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}
