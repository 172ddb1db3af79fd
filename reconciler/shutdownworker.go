package reconciler

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// detachedShutdowns takes the SDK's ShutdownWorker request out of a worker's Stop.
//
// The SDK's Stop sends ShutdownWorker (Temporal moves the worker's sticky task queue to
// the normal one) and waits for the answer before it cancels its polls. With a thousand
// workers stopping at once the dev server answers them one after another: measured,
// 1.2 to 2.3 s at the median, which was the whole of a mass stop's Stop time, while the
// polls that the lease handoff waits for stayed open. The request only speeds up the
// routing of sticky tasks, so it can as well go out in the background: Stop cancels the
// polls at once, and the request still reaches Temporal (Wait before the client closes).
type detachedShutdowns struct {
	log     *slog.Logger
	timeout time.Duration

	mu       sync.Mutex
	inflight int
	idle     chan struct{} // closed when inflight drops to 0, made by a Wait that waits
}

func (d *detachedShutdowns) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method != workflowservice.WorkflowService_ShutdownWorker_FullMethodName {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		// The SDK's headers (namespace, client version) travel in the outgoing metadata.
		md, _ := metadata.FromOutgoingContext(ctx)
		d.mu.Lock()
		d.inflight++
		d.mu.Unlock()
		go func() {
			defer d.done()
			bctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), d.timeout)
			defer cancel()
			if err := invoker(bctx, method, req, new(workflowservice.ShutdownWorkerResponse), cc, opts...); err != nil {
				d.log.Debug("ShutdownWorker failed (sticky tasks of the stopped worker wait for their sticky timeout)", "error", err)
			}
		}()
		return nil // the answer is empty: the SDK reads nothing from it
	}
}

func (d *detachedShutdowns) done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inflight--
	if d.inflight == 0 && d.idle != nil {
		close(d.idle)
		d.idle = nil
	}
}

// Wait waits until no request is in flight, or ctx ends. A request sent while it
// waits (a worker whose stop outlived the drain) is waited for too, and Wait and the
// requests may run concurrently (unlike sync.WaitGroup's Add and Wait).
func (d *detachedShutdowns) Wait(ctx context.Context) {
	d.mu.Lock()
	if d.inflight == 0 {
		d.mu.Unlock()
		return
	}
	if d.idle == nil {
		d.idle = make(chan struct{})
	}
	idle := d.idle
	d.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}
