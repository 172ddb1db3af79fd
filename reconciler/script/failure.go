package script

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
)

// failure is a failure as it crosses between Go and the runtime (runtime.js
// decodeFailure and encodeFailure): one of the TypeScript SDK's failure classes, with
// its fields, its cause, and the handle of the Go error it came from, if any.
type failure struct {
	Class            string          `json:"class"`
	Name             string          `json:"name,omitempty"`
	Message          string          `json:"message"`
	Stack            string          `json:"stack,omitempty"`
	Type             *string         `json:"type,omitempty"`
	NonRetryable     bool            `json:"nonRetryable,omitempty"`
	Details          json.RawMessage `json:"details,omitempty"`
	NextRetryDelay   *float64        `json:"nextRetryDelay,omitempty"`
	Cause            *failure        `json:"cause,omitempty"`
	Handle           int             `json:"handle,omitempty"`
	Args             json.RawMessage `json:"args,omitempty"` // ContinueAsNew
	ActivityType     string          `json:"activityType,omitempty"`
	ActivityID       string          `json:"activityId,omitempty"`
	RetryState       string          `json:"retryState,omitempty"`
	Identity         string          `json:"identity,omitempty"`
	Namespace        string          `json:"namespace,omitempty"`
	WorkflowType     string          `json:"workflowType,omitempty"`
	Execution        *execution      `json:"execution,omitempty"`
	TimeoutType      string          `json:"timeoutType,omitempty"`
	HeartbeatDetails json.RawMessage `json:"lastHeartbeatDetails,omitempty"`
}

type execution struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
}

// errorHandles keeps the Go errors handed to the runtime, so that a failure the
// workflow rethrows reaches Temporal as it came (an ActivityError stays one).
type errorHandles struct {
	next int
	errs map[int]error
}

func (h *errorHandles) add(err error) int {
	if h.errs == nil {
		h.errs = map[int]error{}
	}
	h.next++
	h.errs[h.next] = err
	return h.next
}

// fromError describes a Temporal SDK error for the runtime.
func (h *errorHandles) fromError(err error) *failure {
	if err == nil {
		return nil
	}
	f := &failure{Message: err.Error(), Handle: h.add(err)}
	var (
		app      *temporal.ApplicationError
		act      *temporal.ActivityError
		child    *temporal.ChildWorkflowExecutionError
		canceled *temporal.CanceledError
		timeout  *temporal.TimeoutError
		term     *temporal.TerminatedError
		server   *temporal.ServerError
		panicked *temporal.PanicError
	)
	var actCancelled *activityCancelled
	switch {
	case errors.As(err, &actCancelled) && actCancelled == err:
		f.Class, f.Message = "ActivityFailure", "Activity task cancelled"
		f.RetryState = "CANCEL_REQUESTED"
		f.Cause = h.fromError(actCancelled.cause)
	case errors.As(err, &act) && act == err:
		f.Class, f.Message = "ActivityFailure", "Activity task failed"
		f.ActivityType, f.ActivityID, f.Identity = act.ActivityType().GetName(), act.ActivityID(), act.Identity()
		f.RetryState = retryState(act.RetryState())
		f.Cause = h.fromError(errors.Unwrap(err))
	case errors.As(err, &child) && child == err:
		f.Class, f.Message = "ChildWorkflowFailure", "Child Workflow execution failed"
		f.WorkflowType, f.Namespace = child.WorkflowType(), child.Namespace()
		f.Execution = &execution{WorkflowID: child.WorkflowID(), RunID: child.RunID()}
		f.RetryState = retryState(child.RetryState())
		f.Cause = h.fromError(errors.Unwrap(err))
	case errors.As(err, &app) && app == err:
		f.Class, f.Message = "ApplicationFailure", app.Message()
		typ := app.Type()
		f.Type, f.NonRetryable = &typ, app.NonRetryable()
		f.Details = details(app.HasDetails(), app.Details)
		f.Cause = h.fromError(errors.Unwrap(err))
	case errors.As(err, &canceled) && canceled == err:
		f.Class = "CancelledFailure"
		f.Details = details(canceled.HasDetails(), canceled.Details)
	case errors.As(err, &timeout) && timeout == err:
		f.Class = "TimeoutFailure"
		f.TimeoutType = timeoutType(timeout.TimeoutType())
		f.HeartbeatDetails = details(timeout.HasLastHeartbeatDetails(), timeout.LastHeartbeatDetails)
	case errors.As(err, &term) && term == err:
		f.Class = "TerminatedFailure"
	case errors.As(err, &server) && server == err:
		f.Class = "ServerFailure"
	case errors.As(err, &panicked) && panicked == err:
		typ := "PanicError"
		f.Class, f.Type = "ApplicationFailure", &typ
	default:
		typ := "Error"
		f.Class, f.Type = "ApplicationFailure", &typ
	}
	return f
}

// details reads a failure's details as a JSON array (nil when there are none).
func details(has bool, get func(...any) error) json.RawMessage {
	if !has {
		return nil
	}
	vals := make([]converter.RawValue, 16)
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := get(ptrs...); err != nil {
		return nil
	}
	var out []json.RawMessage
	for _, v := range vals {
		if v.Payload() == nil {
			break
		}
		out = append(out, payloadJSON(v.Payload()))
	}
	b, _ := json.Marshal(out)
	return b
}

func retryState(s enumspb.RetryState) string { return screaming(s.String(), "RETRY_STATE_") }

func timeoutType(t enumspb.TimeoutType) string { return screaming(t.String(), "TIMEOUT_TYPE_") }

// screaming spells an enum value as the TypeScript SDK does: MaximumAttemptsReached
// (or RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED) is MAXIMUM_ATTEMPTS_REACHED.
func screaming(name, prefix string) string {
	if strings.HasPrefix(name, prefix) {
		return name[len(prefix):]
	}
	var b strings.Builder
	for i, r := range name {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// toError is what a failure the workflow threw becomes in Temporal: the Go error it
// came from, an application error of its type (ApplicationFailure) or of the thrown
// error's name.
func (h *errorHandles) toError(f *failure) error {
	if f == nil {
		return nil
	}
	if err, ok := h.errs[f.Handle]; ok && f.Handle != 0 {
		return err
	}
	var cause error
	if f.Cause != nil {
		cause = h.toError(f.Cause)
	}
	var detailArgs []any
	if len(f.Details) > 0 {
		var ds []json.RawMessage
		if json.Unmarshal(f.Details, &ds) == nil {
			for _, d := range ds {
				detailArgs = append(detailArgs, d)
			}
		}
	}
	switch f.Class {
	case "CancelledFailure":
		return temporal.NewCanceledError(detailArgs...)
	case "ApplicationFailure":
		typ := "Error"
		if f.Type != nil && *f.Type != "" {
			typ = *f.Type
		}
		opts := temporal.ApplicationErrorOptions{NonRetryable: f.NonRetryable, Cause: cause, Details: detailArgs}
		if f.NextRetryDelay != nil {
			opts.NextRetryDelay = msDuration(*f.NextRetryDelay)
		}
		return temporal.NewApplicationErrorWithOptions(f.Message, typ, opts)
	}
	typ := f.Name
	if typ == "" {
		typ = "Error"
	}
	var opts temporal.ApplicationErrorOptions
	opts.Cause = cause
	if f.Stack != "" {
		opts.Details = []any{map[string]string{"stack": f.Stack}}
	}
	return temporal.NewApplicationErrorWithOptions(f.Message, typ, opts)
}

// payloadJSON is a payload as JSON text for the runtime.
func payloadJSON(p *commonpb.Payload) json.RawMessage {
	if p == nil {
		return json.RawMessage("null")
	}
	switch string(p.GetMetadata()[converter.MetadataEncoding]) {
	case converter.MetadataEncodingJSON:
		if json.Valid(p.GetData()) {
			return p.GetData()
		}
	case converter.MetadataEncodingNil:
		return json.RawMessage("null")
	}
	var v any
	if err := converter.GetDefaultDataConverter().FromPayload(p, &v); err != nil {
		b, _ := json.Marshal(fmt.Sprintf("<payload that is not JSON: %s>", err))
		return b
	}
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// rawValues reads up to len(max) payloads of EncodedValues-like getters as a JSON
// array of the values present.
func rawValues(get func(...any) error, max int) (json.RawMessage, error) {
	vals := make([]converter.RawValue, max)
	ptrs := make([]any, max)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := get(ptrs...); err != nil {
		return nil, err
	}
	var out []json.RawMessage
	for _, v := range vals {
		if v.Payload() == nil {
			break
		}
		out = append(out, payloadJSON(v.Payload()))
	}
	return arrayJSON(out), nil
}

func arrayJSON(vals []json.RawMessage) json.RawMessage {
	if len(vals) == 0 {
		return json.RawMessage("[]")
	}
	b, _ := json.Marshal(vals)
	return b
}
