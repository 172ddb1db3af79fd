package reconciler

import (
	"context"
	"sync"
)

// runner is the lifecycle of a service that runs one goroutine: start runs fn until
// stop, which cancels its context and waits for it. stop is idempotent, and a loop
// never started stops at once. The services embed it and name their job.
type runner struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// start runs fn in a goroutine until stop; the goroutine does not end with ctx.
func (l *runner) start(ctx context.Context, fn func(ctx context.Context)) {
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		fn(ctx)
	}()
}

// stop ends the goroutine and waits for it.
func (l *runner) stop() {
	l.once.Do(func() {
		if l.cancel != nil {
			l.cancel()
			<-l.done
		}
	})
}
