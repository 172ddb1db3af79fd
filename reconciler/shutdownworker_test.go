package reconciler

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// The interceptor answers ShutdownWorker at once and sends it in the background with
// the caller's headers, Wait waits for it, and every other request goes through as is.
func TestDetachedShutdownsAnswerAtOnceAndStillSend(t *testing.T) {
	d := &detachedShutdowns{log: slog.New(slog.NewTextHandler(io.Discard, nil)), timeout: 10 * time.Second}
	release := make(chan struct{})
	sent := make(chan metadata.MD, 1)
	invoker := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		if method == workflowservice.WorkflowService_ShutdownWorker_FullMethodName {
			md, _ := metadata.FromOutgoingContext(ctx)
			<-release // Temporal answering slowly
			sent <- md
		}
		return nil
	}
	intercept := d.interceptor()

	caller, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), metadata.Pairs("temporal-namespace", "ns1")))
	returned := make(chan error, 1)
	go func() {
		returned <- intercept(caller, workflowservice.WorkflowService_ShutdownWorker_FullMethodName, &workflowservice.ShutdownWorkerRequest{}, &workflowservice.ShutdownWorkerResponse{}, nil, invoker)
	}()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("ShutdownWorker answered %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ShutdownWorker waited for Temporal's answer")
	}
	cancel() // the worker's Stop is over: its context ends, the request goes on

	waited := make(chan struct{})
	go func() {
		d.Wait(context.Background())
		close(waited)
	}()
	select {
	case <-waited:
		t.Fatal("Wait returned while the request was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the request was answered")
	}
	if md := <-sent; len(md.Get("temporal-namespace")) != 1 || md.Get("temporal-namespace")[0] != "ns1" {
		t.Fatalf("the request went without the caller's headers: %v", md)
	}

	other := false
	err := intercept(context.Background(), workflowservice.WorkflowService_PollWorkflowTaskQueue_FullMethodName, nil, nil, nil,
		func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
			other = true
			return io.EOF
		})
	if !other || err != io.EOF {
		t.Fatalf("another request did not go through as is: called %v, error %v", other, err)
	}
}
