// Package flow is the workflow interpreter: it parses and validates compiled workflow
// definitions (SPEC section 4) and runs them as Temporal workflow code.
//
// A definition is a graph of nodes keyed by id, entered at "start". Parse does every
// check that can be done before a run (node types, field types, references between
// nodes, activity and child workflow names, expression syntax) so that a definition
// that loads is one that can only fail for reasons of its data. Execute is
// deterministic: it iterates nothing in map order, reads no clock and no database, and
// gets its definition from the run's history (see the reconciler's pinning).
package flow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Node types of definition version 1.
const (
	TypeActivity      = "activity"
	TypeCondition     = "condition"
	TypeSleep         = "sleep"
	TypeParallel      = "parallel"
	TypeWaitSignal    = "wait_signal"
	TypeChildWorkflow = "child_workflow"
	TypeReturn        = "return"
	TypeFail          = "fail"
)

// DefaultActivityTimeout bounds one attempt of an activity node without "timeout".
const DefaultActivityTimeout = 5 * time.Minute

// Definition is a parsed and validated compiled workflow.
type Definition struct {
	Start string
	Nodes map[string]*Node

	// Signals are the signal names the definition waits for or reads, sorted.
	Signals []string
	// Activities and Children are the activity and workflow names it calls, sorted.
	Activities []string
	Children   []string
}

// Node is one step of a definition. Which fields are set depends on Type.
type Node struct {
	ID   string
	Type string
	Next string

	// activity
	Activity string
	Input    *Template // activity and child_workflow
	Timeout  time.Duration
	Retry    *RetryPolicy

	// condition
	If   *Expr
	Then string
	Else string

	// sleep
	Duration *Template

	// parallel
	Branches []string

	// wait_signal
	Signal      string
	WaitTimeout *Template
	OnTimeout   string

	// child_workflow
	Workflow string

	// return, fail
	Value   *Template
	Message *Template
}

// RetryPolicy is an activity node's "retry". Zero fields take Temporal's defaults.
type RetryPolicy struct {
	MaximumAttempts    int32
	InitialInterval    time.Duration
	BackoffCoefficient float64
	MaximumInterval    time.Duration
	NonRetryableErrors []string
}

// Catalog says which names a definition may call. A nil function accepts every name.
type Catalog struct {
	Activity func(name string) bool
	Workflow func(name string) bool
}

// ValidationError lists everything wrong with a definition.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return "invalid workflow definition: " + strings.Join(e.Problems, "; ")
}

var fieldsOf = map[string][]string{
	TypeActivity:      {"activity", "input", "timeout", "retry", "next"},
	TypeCondition:     {"if", "then", "else"},
	TypeSleep:         {"duration", "next"},
	TypeParallel:      {"branches", "next"},
	TypeWaitSignal:    {"signal", "timeout", "next", "on_timeout"},
	TypeChildWorkflow: {"workflow", "input", "next"},
	TypeReturn:        {"value"},
	TypeFail:          {"message"},
}

// Fields every node may carry for the editor's benefit; the interpreter ignores them.
var commonFields = []string{"type", "label", "description"}

var topFields = []string{"version", "start", "nodes", "name", "description", "metadata"}

// Parse decodes and validates a compiled workflow definition.
func Parse(code []byte, cat Catalog) (*Definition, error) {
	p := &parser{cat: cat, refs: refs{nodes: map[string]bool{}, signals: map[string]bool{}}}
	def := p.parse(code)
	if len(p.problems) > 0 {
		return nil, &ValidationError{Problems: p.problems}
	}
	return def, nil
}

type parser struct {
	cat      Catalog
	refs     refs
	problems []string
}

func (p *parser) fail(format string, args ...any) {
	if len(p.problems) < 20 {
		p.problems = append(p.problems, fmt.Sprintf(format, args...))
	}
}

func (p *parser) parse(code []byte) *Definition {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(code, &top); err != nil {
		p.fail("not a JSON object: %s", err)
		return nil
	}
	p.unknownFields("definition", top, topFields)

	var version int
	if raw, ok := top["version"]; !ok {
		p.fail(`"version" is missing (expected 1)`)
	} else if err := json.Unmarshal(raw, &version); err != nil || version != 1 {
		p.fail(`"version" must be 1, got %s`, compact(raw))
	}

	def := &Definition{Nodes: map[string]*Node{}}
	if raw, ok := top["start"]; !ok {
		p.fail(`"start" is missing`)
	} else if err := json.Unmarshal(raw, &def.Start); err != nil || def.Start == "" {
		p.fail(`"start" must be a node id, got %s`, compact(raw))
	}

	var nodes map[string]json.RawMessage
	if raw, ok := top["nodes"]; !ok {
		p.fail(`"nodes" is missing`)
		return def
	} else if err := json.Unmarshal(raw, &nodes); err != nil || nodes == nil {
		p.fail(`"nodes" must be an object of node id -> node, got %s`, compact(raw))
		return def
	}
	if len(nodes) == 0 {
		p.fail(`"nodes" is empty`)
	}
	for _, id := range slices.Sorted(maps.Keys(nodes)) {
		if n := p.node(id, nodes[id]); n != nil {
			def.Nodes[id] = n
		}
	}
	if def.Start != "" && nodes != nil {
		if _, ok := nodes[def.Start]; !ok {
			p.fail(`"start" names node %q, which does not exist`, def.Start)
		}
	}
	p.references(def, nodes)
	return def
}

func (p *parser) node(id string, raw json.RawMessage) *Node {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		p.fail("node %q must be an object, got %s", id, compact(raw))
		return nil
	}
	n := &Node{ID: id}
	if !p.str(id, fields, "type", &n.Type, true) {
		return nil
	}
	allowed, ok := fieldsOf[n.Type]
	if !ok {
		p.fail("node %q: unknown type %q (known: activity, condition, sleep, parallel, wait_signal, child_workflow, return, fail)", id, n.Type)
		return nil
	}
	p.unknownFields(fmt.Sprintf("node %q (%s)", id, n.Type), fields, append(allowed, commonFields...))

	switch n.Type {
	case TypeActivity:
		if p.str(id, fields, "activity", &n.Activity, true) && p.cat.Activity != nil && !p.cat.Activity(n.Activity) {
			p.fail("node %q: unknown activity %q (built in: echo, log, http.request; or an active component of the project)", id, n.Activity)
		}
		n.Input = p.template(id, fields, "input")
		n.Timeout = DefaultActivityTimeout
		if _, ok := fields["timeout"]; ok {
			n.Timeout = p.duration(id, fields, "timeout")
		}
		n.Retry = p.retry(id, fields)
		p.str(id, fields, "next", &n.Next, false)
	case TypeCondition:
		n.If = p.condition(id, fields)
		p.str(id, fields, "then", &n.Then, false)
		p.str(id, fields, "else", &n.Else, false)
	case TypeSleep:
		n.Duration = p.durationTemplate(id, fields, "duration", true)
		p.str(id, fields, "next", &n.Next, false)
	case TypeParallel:
		if raw, ok := fields["branches"]; !ok {
			p.fail("node %q: \"branches\" is missing", id)
		} else if err := json.Unmarshal(raw, &n.Branches); err != nil || len(n.Branches) == 0 {
			p.fail("node %q: \"branches\" must be a non-empty array of node ids, got %s", id, compact(raw))
		}
		p.str(id, fields, "next", &n.Next, false)
	case TypeWaitSignal:
		p.str(id, fields, "signal", &n.Signal, true)
		if n.Signal != "" {
			p.refs.signals[n.Signal] = true
		}
		n.WaitTimeout = p.durationTemplate(id, fields, "timeout", false)
		p.str(id, fields, "next", &n.Next, false)
		p.str(id, fields, "on_timeout", &n.OnTimeout, false)
		if n.OnTimeout != "" && n.WaitTimeout == nil {
			p.fail("node %q: \"on_timeout\" needs a \"timeout\"", id)
		}
	case TypeChildWorkflow:
		if p.str(id, fields, "workflow", &n.Workflow, true) && p.cat.Workflow != nil && !p.cat.Workflow(n.Workflow) {
			p.fail("node %q: child workflow %q is not an active workflow of this project", id, n.Workflow)
		}
		n.Input = p.template(id, fields, "input")
		p.str(id, fields, "next", &n.Next, false)
	case TypeReturn:
		n.Value = p.template(id, fields, "value")
	case TypeFail:
		n.Message = p.template(id, fields, "message")
		if n.Message == nil {
			p.fail("node %q: \"message\" is missing", id)
		}
	}
	return n
}

// references checks that every node id mentioned exists and collects what the
// definition calls.
func (p *parser) references(def *Definition, nodes map[string]json.RawMessage) {
	activities, children := map[string]bool{}, map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(def.Nodes)) {
		n := def.Nodes[id]
		check := func(field, target string) {
			if target == "" {
				return
			}
			if _, ok := nodes[target]; !ok {
				p.fail("node %q: %q names node %q, which does not exist", id, field, target)
			}
		}
		check("next", n.Next)
		check("then", n.Then)
		check("else", n.Else)
		check("on_timeout", n.OnTimeout)
		for _, b := range n.Branches {
			check("branches", b)
		}
		if n.Activity != "" {
			activities[n.Activity] = true
		}
		if n.Workflow != "" {
			children[n.Workflow] = true
		}
	}
	for _, ref := range slices.Sorted(maps.Keys(p.refs.nodes)) {
		if _, ok := nodes[ref]; !ok {
			p.fail("an expression reads nodes.%s, but there is no node %q", ref, ref)
		}
	}
	def.Signals = slices.Sorted(maps.Keys(p.refs.signals))
	def.Activities = slices.Sorted(maps.Keys(activities))
	def.Children = slices.Sorted(maps.Keys(children))
}

func (p *parser) unknownFields(where string, fields map[string]json.RawMessage, allowed []string) {
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		found := false
		for _, a := range allowed {
			if k == a {
				found = true
				break
			}
		}
		if !found {
			p.fail("%s: unknown field %q (allowed: %s)", where, k, strings.Join(allowed, ", "))
		}
	}
}

// str decodes a string field; it reports whether a non-empty value was found.
func (p *parser) str(id string, fields map[string]json.RawMessage, name string, dst *string, required bool) bool {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		if required {
			p.fail("node %q: %q is missing", id, name)
		}
		return false
	}
	if err := json.Unmarshal(raw, dst); err != nil || *dst == "" {
		p.fail("node %q: %q must be a non-empty string, got %s", id, name, compact(raw))
		*dst = ""
		return false
	}
	return true
}

func (p *parser) template(id string, fields map[string]json.RawMessage, name string) *Template {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		p.fail("node %q: %q is not valid JSON: %s", id, name, err)
		return nil
	}
	t, err := compileTemplate(v, &p.refs)
	if err != nil {
		p.fail("node %q: %q: %s", id, name, err)
		return nil
	}
	return t
}

func (p *parser) duration(id string, fields map[string]json.RawMessage, name string) time.Duration {
	raw := fields[name]
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		p.fail("node %q: %q must be a duration string like \"30s\" or \"5m\", got %s", id, name, compact(raw))
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		p.fail("node %q: %q must be a positive duration like \"30s\" or \"5m\", got %q", id, name, s)
		return 0
	}
	return d
}

// durationTemplate accepts a literal Go duration or a template producing one.
func (p *parser) durationTemplate(id string, fields map[string]json.RawMessage, name string, required bool) *Template {
	raw, ok := fields[name]
	if !ok {
		if required {
			p.fail("node %q: %q is missing", id, name)
		}
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		p.fail("node %q: %q must be a duration string like \"30s\" or a ${...} template, got %s", id, name, compact(raw))
		return nil
	}
	if !strings.Contains(s, "${") {
		if d, err := time.ParseDuration(s); err != nil || d < 0 {
			p.fail("node %q: %q must be a duration like \"30s\" or \"5m\", got %q", id, name, s)
			return nil
		}
	}
	return p.template(id, fields, name)
}

func (p *parser) condition(id string, fields map[string]json.RawMessage) *Expr {
	raw, ok := fields["if"]
	if !ok {
		p.fail("node %q: \"if\" is missing", id)
		return nil
	}
	var src string
	if err := json.Unmarshal(raw, &src); err != nil || strings.TrimSpace(src) == "" {
		p.fail("node %q: \"if\" must be an expression string, got %s", id, compact(raw))
		return nil
	}
	src = strings.TrimSpace(src)
	if parts, err := splitTemplate(src); err == nil && len(parts) == 1 && parts[0].isExpr {
		src = parts[0].text
	}
	e, err := compileExpr(src, &p.refs)
	if err != nil {
		p.fail("node %q: \"if\": %s", id, err)
		return nil
	}
	return e
}

func (p *parser) retry(id string, fields map[string]json.RawMessage) *RetryPolicy {
	raw, ok := fields["retry"]
	if !ok {
		return nil
	}
	var r struct {
		MaximumAttempts    *json.Number `json:"maximum_attempts"`
		InitialInterval    *string      `json:"initial_interval"`
		BackoffCoefficient *json.Number `json:"backoff_coefficient"`
		MaximumInterval    *string      `json:"maximum_interval"`
		NonRetryableErrors []string     `json:"non_retryable_errors"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		p.fail("node %q: \"retry\" must be an object with maximum_attempts, initial_interval, backoff_coefficient, maximum_interval, non_retryable_errors: %s", id, err)
		return nil
	}
	out := &RetryPolicy{NonRetryableErrors: r.NonRetryableErrors}
	if r.MaximumAttempts != nil {
		n, err := r.MaximumAttempts.Int64()
		if err != nil || n < 0 || n > 1<<30 {
			p.fail("node %q: retry.maximum_attempts must be a whole number >= 0 (0 = unlimited), got %s", id, r.MaximumAttempts)
		}
		out.MaximumAttempts = int32(n)
	}
	interval := func(name string, s *string) time.Duration {
		if s == nil {
			return 0
		}
		d, err := time.ParseDuration(*s)
		if err != nil || d <= 0 {
			p.fail("node %q: retry.%s must be a positive duration like \"1s\", got %q", id, name, *s)
		}
		return d
	}
	out.InitialInterval = interval("initial_interval", r.InitialInterval)
	out.MaximumInterval = interval("maximum_interval", r.MaximumInterval)
	if r.BackoffCoefficient != nil {
		f, err := r.BackoffCoefficient.Float64()
		if err != nil || f < 1 {
			p.fail("node %q: retry.backoff_coefficient must be a number >= 1, got %s", id, r.BackoffCoefficient)
		}
		out.BackoffCoefficient = f
	}
	if out.MaximumInterval > 0 && out.InitialInterval > out.MaximumInterval {
		p.fail("node %q: retry.initial_interval (%s) is longer than retry.maximum_interval (%s)", id, out.InitialInterval, out.MaximumInterval)
	}
	return out
}

func compact(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	if s == "" {
		return "nothing"
	}
	return s
}

// ErrStepLimit is the type of the failure of a run that executed more nodes than allowed.
const ErrStepLimit = "StepLimitExceeded"
