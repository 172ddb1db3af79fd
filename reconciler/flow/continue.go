package flow

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Continuing as new
//
// A run continues as new in two ways. A continue_as_new node starts a new run of the
// same workflow with the node's input: a fresh run (nodes, signals.<name>, the
// timeout and workflow.start_time start over) that keeps only the pinned version and
// the signals received and not yet consumed. And a long run continues as new on its
// own when Temporal suggests it (GetContinueAsNewSuggested: its history is getting
// long), at the next loop back on the main path (a jump to a node the main path ran
// before in this run) or between two iterations of a foreach on the main path: then
// the new run resumes where this one stopped, with the same input, the nodes' outputs
// and errors of the main path, signals.<name>, the signals not yet consumed, the
// deadline of the workflow's timeout, workflow.start_time, and the foreach's items and
// results so far. The node count of the step limit starts over in each run. Loops
// inside parallel branches and foreach bodies do not continue as new.
//
// The new run's second argument is a Continued. The reconciler reads it only when
// Temporal says the run was continued (ContinuedExecutionRunID), so a client cannot
// pin a version or forge a state by passing a second argument.

// Continued is the second argument of a run that the interpreter continued as new.
type Continued struct {
	// Pin is the compiled version the new run keeps (Options.Pin of the run before).
	Pin string `json:"pin"`
	// Signals were received and not consumed, in order of arrival.
	Signals []Signal `json:"signals,omitempty"`
	// Resume is set when the run continued on its own.
	Resume *Resume `json:"resume,omitempty"`
}

// Signal is a signal carried to the new run.
type Signal struct {
	Name    string `json:"name"`
	Payload any    `json:"payload"`
}

// Resume is where and with what a run that continued on its own goes on.
type Resume struct {
	At        string           `json:"at"`         // the main path's next node
	Nodes     map[string]any   `json:"nodes"`      // nodes.<id> of the main path
	Consumed  map[string]any   `json:"consumed"`   // signals.<name>
	Foreach   *ForeachProgress `json:"foreach"`    // when At is a foreach that had started
	Deadline  string           `json:"deadline"`   // of the workflow's timeout (RFC 3339), or ""
	StartTime string           `json:"start_time"` // workflow.start_time of the first run
}

// ForeachProgress is a foreach stopped between iterations: its items, and the
// results of the first len(Results).
type ForeachProgress struct {
	Items   []any `json:"items"`
	Results []any `json:"results"`
}

// resume restores what a continued run carries; it returns the node to start at
// ("" for the definition's start) and the timeout's deadline (zero: none carried).
func (r *run) resume(c *Continued) (string, time.Time, error) {
	for _, s := range c.Signals {
		r.received++
		r.pending[s.Name] = append(r.pending[s.Name], queued{seq: r.received, payload: s.Payload})
	}
	res := c.Resume
	if res == nil {
		return "", time.Time{}, nil
	}
	n, ok := r.def.Nodes[res.At]
	if !ok || !n.Main {
		return "", time.Time{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("the run resumes at node %q, which is not on the main path of its definition", res.At), FailureInput, nil)
	}
	if res.Nodes != nil {
		r.main.nodes = res.Nodes
	}
	for id, entry := range r.main.nodes {
		if m, ok := entry.(map[string]any); ok {
			r.outputs[id] = m["output"]
			if e := m["error"]; e != nil {
				r.errors[id] = e
			}
		}
	}
	if res.Consumed != nil {
		r.signals = res.Consumed
	}
	if res.StartTime != "" {
		r.wf["start_time"] = res.StartTime
	}
	if res.Foreach != nil && n.Type == TypeForeach && len(res.Foreach.Results) <= len(res.Foreach.Items) {
		r.resumeForeach, r.resumeAt = res.Foreach, res.At
	}
	var deadline time.Time
	if res.Deadline != "" {
		d, err := time.Parse(time.RFC3339Nano, res.Deadline)
		if err != nil {
			return "", time.Time{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("the carried deadline %q is not an RFC 3339 time", res.Deadline), FailureInput, nil)
		}
		deadline = d
	}
	return res.At, deadline, nil
}

// carry is what a run continuing on its own at node at passes on.
func (r *run) carry(at string, progress *ForeachProgress) *Continued {
	res := &Resume{
		At:        at,
		Nodes:     r.main.nodes,
		Consumed:  r.signals,
		Foreach:   progress,
		StartTime: fmt.Sprint(r.wf["start_time"]),
	}
	if !r.deadline.IsZero() {
		res.Deadline = r.deadline.UTC().Format(time.RFC3339Nano)
	}
	return &Continued{Pin: r.opts.Pin, Signals: r.unconsumed(), Resume: res}
}

// unconsumed lists the signals received and not consumed, in order of arrival.
func (r *run) unconsumed() []Signal {
	var all []struct {
		seq int
		Signal
	}
	for _, name := range slices.Sorted(maps.Keys(r.pending)) {
		for _, q := range r.pending[name] {
			all = append(all, struct {
				seq int
				Signal
			}{q.seq, Signal{Name: name, Payload: q.payload}})
		}
	}
	slices.SortStableFunc(all, func(a, b struct {
		seq int
		Signal
	}) int {
		return a.seq - b.seq
	})
	out := make([]Signal, len(all))
	for i, s := range all {
		out[i] = s.Signal
	}
	return out
}

// drain queues the signals delivered to the run that its receiving coroutines have
// not taken yet, so that a continue-as-new carries them.
func (r *run) drain() {
	for _, name := range r.def.Signals {
		var payload any
		for r.channels[name].ReceiveAsync(&payload) {
			r.receive(name, payload, r.def.Waits[name])
			payload = nil
		}
	}
}

// continueAsNew ends the run with Temporal's continue-as-new of the same workflow,
// with input and c as its arguments, once it knows they fit in a payload. c is built
// by build after the signals delivered so far are queued.
func (r *run) continueAsNew(ctx workflow.Context, input any, build func() *Continued) error {
	r.drain()
	c := build()
	in, inSize, err := encode(input)
	if err != nil {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("the input of the continued run cannot be sent as JSON: %s", err), FailureExpression, nil)
	}
	st, stSize, err := encode(c)
	if err != nil {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("the state carried to the continued run cannot be sent as JSON: %s", err), FailureExpression, nil)
	}
	if inSize+stSize > MaxPayload {
		what := "the input and the state (unconsumed signals) carried to the continued run"
		if c.Resume != nil {
			what = "the input and the state (node outputs, signals, foreach items and results) carried to the continued run"
		}
		return tooLarge(what, inSize+stSize)
	}
	return workflow.NewContinueAsNewError(ctx, r.wfType, in, st)
}
