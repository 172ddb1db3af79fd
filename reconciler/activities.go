package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/flowbuilder/reconciler/reconciler/component"
	"github.com/flowbuilder/reconciler/reconciler/egress"
)

// Failure types of the built-in activities.
const (
	failureUnknownActivity  = "UnknownActivity"
	failureInvalidInput     = "InvalidInput"
	failureEgressDenied     = "EgressDenied"
	failureHTTPRequest      = "HTTPRequestFailed"
	failureHostNotFound     = "HTTPHostNotFound"
	failurePayloadTooLarge  = "PayloadTooLarge"
	failureResponseTooLarge = "HTTPResponseTooLarge"
)

// builtinActivities are available to every project; components cannot take their names.
var builtinActivities = map[string]func(pw *projectWorker, ctx context.Context, input any) (any, error){
	"echo": func(_ *projectWorker, _ context.Context, input any) (any, error) { return input, nil },
	"log": func(pw *projectWorker, ctx context.Context, input any) (any, error) {
		info := activity.GetInfo(ctx)
		pw.log.Info("workflow log", "workflow_id", info.WorkflowExecution.ID, "workflow_type", info.WorkflowType.Name, "message", input)
		return nil, nil
	},
	"http.request": (*projectWorker).httpRequest,
}

// runActivity is the dynamic activity: every activity of the project lands here and is
// resolved to a built-in or to a component of the served set. Its result must fit in a
// Temporal payload.
func (pw *projectWorker) runActivity(ctx context.Context, args converter.EncodedValues) (any, error) {
	name := activity.GetInfo(ctx).ActivityType.Name
	var input any
	if args.HasValues() {
		if err := args.Get(&input); err != nil {
			return nil, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("activity %s: input is not JSON: %s", name, err), failureInvalidInput, nil)
		}
	}
	out, err := pw.dispatch(ctx, name, input)
	if err != nil {
		return nil, err
	}
	if size := jsonSize(out); size > maxPayloadBytes {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("activity %s returned %d bytes of JSON; Temporal accepts at most %d in one payload", name, size, maxPayloadBytes), failurePayloadTooLarge, nil)
	}
	return out, nil
}

// dispatch runs the built-in or component name. Those that may take long (http.request,
// components) heartbeat while they run: a cancelled run's cancellation reaches them
// with the heartbeat's answer, and stops them instead of letting them finish their
// side effects.
func (pw *projectWorker) dispatch(ctx context.Context, name string, input any) (any, error) {
	if name != "echo" && name != "log" {
		defer keepHeartbeating(ctx)()
	}
	if fn, ok := builtinActivities[name]; ok {
		return fn(pw, ctx, input)
	}
	if c, ok := pw.served.Load().components[name]; ok {
		return pw.callComponent(ctx, name, c, input)
	}
	return nil, temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("unknown activity %q: not built in and not an active component of this project", name), failureUnknownActivity, nil)
}

// maxPayloadBytes is the most JSON an activity may return: Temporal refuses payloads
// over 2 MiB, with a little room for the payload's own encoding.
const maxPayloadBytes = 2_000_000

func jsonSize(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return 0 // the SDK's converter reports it
	}
	return len(b)
}

// heartbeatEvery is how often a long activity records a heartbeat (the SDK throttles
// what it sends to Temporal).
const heartbeatEvery = time.Second

// keepHeartbeating records heartbeats until the returned stop is called.
func keepHeartbeating(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			activity.RecordHeartbeat(ctx)
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func (pw *projectWorker) callComponent(ctx context.Context, name string, c *servedComponent, input any) (any, error) {
	if c.err != nil {
		return nil, temporal.NewNonRetryableApplicationError(c.err.Error(), component.FailureInvalid, nil)
	}
	info := activity.GetInfo(ctx)
	log := pw.log.With("component", name, "workflow_id", info.WorkflowExecution.ID, "attempt", info.Attempt)
	out, err := pw.shared.components.Call(ctx, pw.project.String(), c.program, input, func(level, msg string) {
		switch level {
		case "error":
			log.Error("component console", "message", msg)
		case "warn":
			log.Warn("component console", "message", msg)
		case "debug":
			log.Debug("component console", "message", msg)
		default:
			log.Info("component console", "message", msg)
		}
	})
	if err == nil {
		return out, nil
	}
	var ce *component.Error
	if errors.As(err, &ce) {
		var details []any
		if ce.Stack != "" {
			details = append(details, map[string]string{"stack": ce.Stack})
		}
		return nil, temporal.NewApplicationErrorWithOptions(ce.Message, ce.Type, temporal.ApplicationErrorOptions{
			NonRetryable: !ce.Retryable,
			Details:      details,
		})
	}
	return nil, err
}

// httpRequest is the http.request activity: input {method, url, headers, body,
// timeout}, output {status, headers, body}.
func (pw *projectWorker) httpRequest(ctx context.Context, input any) (any, error) {
	var req egress.Request
	raw, err := json.Marshal(input)
	if err == nil {
		err = json.Unmarshal(raw, &req)
	}
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("http.request: input must be {method, url, headers, body, timeout}: %s", err), failureInvalidInput, nil)
	}
	resp, err := pw.shared.http.Do(ctx, req)
	if err == nil {
		return resp, nil
	}
	var denied *egress.DeniedError
	var bad *egress.InputError
	var tooLarge *egress.TooLargeError
	var dns *net.DNSError
	switch {
	case errors.As(err, &denied):
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), failureEgressDenied, nil)
	case errors.As(err, &bad):
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), failureInvalidInput, nil)
	case errors.As(err, &tooLarge):
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), failureResponseTooLarge, nil)
	case errors.As(err, &dns) && dns.IsNotFound:
		// The name does not exist (NXDOMAIN): retrying would only repeat the answer.
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), failureHostNotFound, nil)
	}
	return nil, temporal.NewApplicationError(err.Error(), failureHTTPRequest)
}
