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
	log      *slog.Logger
	timeout  time.Duration
	inflight sync.WaitGroup
}

func (d *detachedShutdowns) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method != workflowservice.WorkflowService_ShutdownWorker_FullMethodName {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		// The SDK's headers (namespace, client version) travel in the outgoing metadata.
		md, _ := metadata.FromOutgoingContext(ctx)
		d.inflight.Add(1)
		go func() {
			defer d.inflight.Done()
			bctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), d.timeout)
			defer cancel()
			if err := invoker(bctx, method, req, new(workflowservice.ShutdownWorkerResponse), cc, opts...); err != nil {
				d.log.Debug("ShutdownWorker failed (sticky tasks of the stopped worker wait for their sticky timeout)", "error", err)
			}
		}()
		return nil // the answer is empty: the SDK reads nothing from it
	}
}

// Wait waits for the requests in flight, until ctx ends.
func (d *detachedShutdowns) Wait(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		d.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
