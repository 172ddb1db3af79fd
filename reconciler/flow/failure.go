package flow

import (
	"errors"
	"fmt"
	"slices"

	"go.temporal.io/sdk/temporal"
)

// Failure types of runs that end for reasons of the definition or its data.
const (
	FailureWorkflow   = "WorkflowFailed"      // a fail node
	FailureExpression = "ExpressionError"     // a template or condition could not be evaluated
	FailureActivity   = "ActivityFailed"      // an activity node failed after its retries
	FailureChild      = "ChildWorkflowFailed" // a child_workflow node's run failed
	FailureTimeout    = "WorkflowTimeout"     // the definition's "timeout" passed
	FailurePayload    = "PayloadTooLarge"     // a payload the run would send is over MaxPayload
	FailureInput      = "InvalidInput"        // the run's arguments (see the reconciler's runWorkflow)
)

// Catching failures
//
// A catch list on an activity, child_workflow, parallel or foreach node sees the
// failures of activities and child workflows (after their retries), including those
// of the nodes inside a parallel's branches or a foreach's iterations that no catch
// of theirs handled: the failure whose type is ActivityFailed or ChildWorkflowFailed.
// The first entry listing "*" or the type of any failure in its cause chain (the
// wrapper, the activity's own failure type, a child's failure and its causes...)
// routes the run to its next node, with the failure as nodes.<id>.error. What ends a
// run by design is never caught: a fail node (WorkflowFailed), return, the step limit,
// the workflow timeout, an ExpressionError or PayloadTooLarge (mistakes of the
// definition or its data), and cancellation.

// catchable reports whether catch lists may see err.
func catchable(err error) bool {
	if err == nil || temporal.IsCanceledError(err) {
		return false
	}
	var app *temporal.ApplicationError
	if !errors.As(err, &app) {
		return false
	}
	return app.Type() == FailureActivity || app.Type() == FailureChild
}

// catchFor returns the catch entry of n that handles err, if any.
func catchFor(n *Node, err error) (Catch, bool) {
	if len(n.Catch) == 0 || !catchable(err) {
		return Catch{}, false
	}
	types := failureTypes(err)
	for _, c := range n.Catch {
		for _, want := range c.Errors {
			if want == "*" || slices.Contains(types, want) {
				return c, true
			}
		}
	}
	return Catch{}, false
}

// failureTypes lists the types of the failures in err's cause chain, outermost first.
func failureTypes(err error) []string {
	var out []string
	for ; err != nil; err = errors.Unwrap(err) {
		if typ, _, ok := describe(err); ok {
			out = append(out, typ)
		}
	}
	return out
}

// failureValue is err as expressions see it in nodes.<id>.error: {type, message,
// cause}, cause being the next failure of the chain (or null). The SDK's transport
// wrappers (ActivityError, ChildWorkflowExecutionError) are skipped: their cause is
// what failed.
func failureValue(err error) any {
	for ; err != nil; err = errors.Unwrap(err) {
		if typ, msg, ok := describe(err); ok {
			return map[string]any{"type": typ, "message": msg, "cause": failureValue(errors.Unwrap(err))}
		}
	}
	return nil
}

// rootCause is the type and message of the innermost failure of err's chain.
func rootCause(err error) (typ, msg string) {
	for ; err != nil; err = errors.Unwrap(err) {
		if t, m, ok := describe(err); ok {
			typ, msg = t, m
		}
	}
	return typ, msg
}

// describe names one failure of a chain; ok is false for the SDK's wrappers.
func describe(err error) (typ, msg string, ok bool) {
	switch e := err.(type) {
	case *temporal.ApplicationError:
		return e.Type(), e.Message(), true
	case *temporal.ActivityError, *temporal.ChildWorkflowExecutionError:
		return "", "", false
	case *temporal.TimeoutError:
		return "Timeout", fmt.Sprintf("%s timeout", timeoutName(e)), true
	case *temporal.CanceledError:
		return "Canceled", "canceled", true
	case *temporal.TerminatedError:
		return "Terminated", "terminated", true
	case *temporal.PanicError:
		return "Panic", e.Error(), true
	case *temporal.ServerError:
		return "ServerError", e.Error(), true
	}
	return "Error", err.Error(), true
}

func timeoutName(e *temporal.TimeoutError) string {
	switch s := e.TimeoutType().String(); s {
	case "StartToClose", "ScheduleToClose", "ScheduleToStart", "Heartbeat":
		return s
	default:
		return "a"
	}
}

// nodeFailed ends the run because a node's activity or child failed (after its
// retries); the cause keeps the original failure, and since the extended format the
// message says what the root cause was. A cancellation stays a cancellation.
func (r *run) nodeFailed(n *Node, typ, what string, err error) error {
	if temporal.IsCanceledError(err) {
		return err
	}
	msg := fmt.Sprintf("node %q: %s failed", n.ID, what)
	if r.extended {
		if rt, rm := rootCause(err); rt != "" {
			msg += ": " + rt + ": " + rm
		}
	}
	return temporal.NewNonRetryableApplicationError(msg, typ, err)
}

func expressionError(n *Node, field string, err error) error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("node %q: %s: %s", n.ID, field, err), FailureExpression, nil)
}
