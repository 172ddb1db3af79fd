// Package batch groups concurrent requests into one statement (group commit): a
// request made while the group's statement for earlier ones is in flight waits for it
// to finish and goes out with every other request that arrived meanwhile. A request
// made while nothing is in flight goes out at once, alone: batching adds no latency to
// a quiet service and turns a thousand reconciles at once into a few dozen statements.
package batch

import (
	"context"
	"sync"
)

// Batcher runs requests of type Req through Run, many at a time.
type Batcher[Req, Res any] struct {
	// Run executes a batch; it returns one result per request, in order, or an error
	// for the whole batch.
	Run func(ctx context.Context, reqs []Req) ([]Res, error)
	// Max bounds a batch (0: no bound).
	Max int

	mu      sync.Mutex
	pending []*call[Req, Res]
	busy    bool
}

type call[Req, Res any] struct {
	ctx  context.Context
	req  Req
	res  Res
	err  error
	done chan struct{}
}

// Do runs req in the next batch and returns its result. ctx bounds the wait; the
// batch's own statement runs under the context of the request that sent it.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	c := &call[Req, Res]{ctx: ctx, req: req, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	lead := !b.busy
	b.busy = true
	b.mu.Unlock()
	if lead {
		go b.drain() // sends batches until none is pending
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		var zero Res
		return zero, ctx.Err()
	}
}

// drain sends the pending requests, batch after batch, until there are none.
func (b *Batcher[Req, Res]) drain() {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.busy = false
			b.mu.Unlock()
			return
		}
		n := len(b.pending)
		if b.Max > 0 && n > b.Max {
			n = b.Max
		}
		calls := b.pending[:n:n]
		b.pending = append([]*call[Req, Res](nil), b.pending[n:]...)
		b.mu.Unlock()
		b.send(calls)
	}
}

func (b *Batcher[Req, Res]) send(calls []*call[Req, Res]) {
	// The batch runs under the context of its first live request (the others may have
	// given up waiting: their results are simply not read).
	ctx := calls[0].ctx
	for _, c := range calls {
		if c.ctx.Err() == nil {
			ctx = c.ctx
			break
		}
	}
	reqs := make([]Req, len(calls))
	for i, c := range calls {
		reqs[i] = c.req
	}
	// Not cancelled with that request (the others wait for the same statement), but
	// within its deadline.
	bctx := context.WithoutCancel(ctx)
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		bctx, cancel = context.WithDeadline(bctx, d)
		defer cancel()
	}
	res, err := b.Run(bctx, reqs)
	for i, c := range calls {
		switch {
		case err != nil:
			c.err = err
		case i < len(res):
			c.res = res[i]
		}
		close(c.done)
	}
}
