// Package flow is the workflow interpreter: it parses and validates compiled workflow
// definitions (SPEC section 4 and "4, continued") and runs them as Temporal workflow
// code.
//
// A definition is a graph of nodes keyed by id, entered at "start". Parse does every
// check that can be done before a run (node types, field types, references between
// nodes, which nodes a parallel branch or a foreach body may reach, activity and child
// workflow names, expression syntax and the names expressions use) so that a
// definition that loads is one that can only fail for reasons of its data. Execute is
// deterministic: it iterates nothing in map order, reads no clock and no database, and
// gets its definition from the run's history (see the reconciler's pinning).
//
// The format is described by schema.json (JSON Schema 2020-12), which tests hold to
// agree with Parse.
package flow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr/builtin"
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
	TypeForeach       = "foreach"
	TypeSet           = "set"
	TypeSwitch        = "switch"
	TypeContinueAsNew = "continue_as_new"
)

// DefaultActivityTimeout bounds one attempt of an activity node without "timeout".
const DefaultActivityTimeout = 5 * time.Minute

// MaxConcurrency is the largest "concurrency" of a foreach node (Temporal refuses more
// than 2,000 pending activities or children per run; nested loops multiply).
const MaxConcurrency = 100

// DefaultIndex is the name a foreach node's position is bound to without "index".
const DefaultIndex = "index"

// Definition is a parsed and validated compiled workflow.
type Definition struct {
	Start string
	// Timeout fails the run with WorkflowTimeout once it has run that long (0: none).
	Timeout time.Duration
	Nodes   map[string]*Node

	// Signals are the signal names the definition waits for or reads, sorted; Waits
	// those some wait_signal node waits for.
	Signals []string
	Waits   map[string]bool
	// Activities and Children are the activity and workflow names it calls, sorted.
	Activities []string
	Children   []string
}

// Node is one step of a definition. Which fields are set depends on Type.
type Node struct {
	ID   string
	Type string
	Next string
	// Main says the node is on the main path: reached from "start" without entering
	// a parallel branch or a foreach body.
	Main bool

	// activity
	Activity string
	Input    *Template // activity, child_workflow and continue_as_new
	Timeout  time.Duration
	Retry    *RetryPolicy

	// activity, child_workflow, parallel, foreach
	Catch []Catch

	// condition
	If   *Expr
	Then string
	Else string

	// sleep
	Duration *Template
	Until    *Template

	// parallel
	Branches []string

	// wait_signal
	Signal      string
	Any         []SignalRoute
	WaitTimeout *Template
	OnTimeout   string

	// child_workflow
	Workflow string

	// return, fail
	Value   *Template
	Message *Template

	// foreach
	Items       *Template
	As          string
	Index       string
	Body        string
	Concurrency int

	// set
	Values *Template

	// switch
	Cases   []Case
	Default string
}

// RetryPolicy is an activity node's "retry". Zero fields take Temporal's defaults.
type RetryPolicy struct {
	MaximumAttempts    int32
	InitialInterval    time.Duration
	BackoffCoefficient float64
	MaximumInterval    time.Duration
	NonRetryableErrors []string
}

// Catch routes a node's failure whose type (or the type of a failure in its cause
// chain) is in Errors ("*": any) to Next.
type Catch struct {
	Errors []string
	Next   string
}

// Case is one case of a switch node.
type Case struct {
	If   *Expr
	Next string
}

// SignalRoute is one signal of a wait_signal node's "any".
type SignalRoute struct {
	Signal string
	Next   string
}

// Catalog says which names a definition may call. A nil function accepts every name.
type Catalog struct {
	Activity func(name string) bool
	Workflow func(name string) bool
}

// Problem is one thing wrong with a definition: the node it concerns ("" for the
// definition itself), the field (a JSON path inside the node, such as "retry.
// maximum_attempts" or "cases[1].if"; "" for the whole node), what is wrong, and its
// kind: whether a JSON Schema (schema.json) can express the check.
type Problem struct {
	Node    string      `json:"node,omitempty"`
	Field   string      `json:"field,omitempty"`
	Message string      `json:"message"`
	Kind    ProblemKind `json:"kind"`
}

// ProblemKind sorts problems by what finds them.
type ProblemKind string

// The kinds of problems. schema.json finds every KindShape problem and no other.
const (
	KindShape      ProblemKind = "shape"      // types, required and unknown fields, formats, ranges
	KindReference  ProblemKind = "reference"  // a node id that does not exist
	KindExpression ProblemKind = "expression" // expression syntax, names and types
	KindCatalog    ProblemKind = "catalog"    // activity and child workflow names
	KindStructure  ProblemKind = "structure"  // paths, and what relates fields to each other
)

func (p Problem) String() string {
	if p.Node == "" {
		return p.Message
	}
	return fmt.Sprintf("node %q: %s", p.Node, p.Message)
}

// ValidationError lists everything wrong with a definition (at most maxProblems).
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid workflow definition: " + strings.Join(parts, "; ")
}

const maxProblems = 20

var fieldsOf = map[string][]string{
	TypeActivity:      {"activity", "input", "timeout", "retry", "next", "catch"},
	TypeCondition:     {"if", "then", "else"},
	TypeSleep:         {"duration", "until", "next"},
	TypeParallel:      {"branches", "next", "catch"},
	TypeWaitSignal:    {"signal", "any", "timeout", "next", "on_timeout"},
	TypeChildWorkflow: {"workflow", "input", "next", "catch"},
	TypeReturn:        {"value"},
	TypeFail:          {"message"},
	TypeForeach:       {"items", "as", "index", "body", "concurrency", "next", "catch"},
	TypeSet:           {"values", "next"},
	TypeSwitch:        {"cases", "default"},
	TypeContinueAsNew: {"input"},
}

var nodeTypes = []string{TypeActivity, TypeCondition, TypeSleep, TypeParallel, TypeWaitSignal,
	TypeChildWorkflow, TypeReturn, TypeFail, TypeForeach, TypeSet, TypeSwitch, TypeContinueAsNew}

// Fields every node may carry for the editor's benefit; the interpreter ignores them.
var commonFields = []string{"type", "label", "description"}

var topFields = []string{"version", "start", "nodes", "name", "description", "metadata", "timeout"}

// Parse decodes and validates a compiled workflow definition.
func Parse(code []byte, cat Catalog) (*Definition, error) {
	return parse(code, cat, false)
}

// ParsePinned parses the definition a run in flight is pinned to. It was valid when
// the run started; checks added since that such a definition may fail and that do not
// change what it means (parallel branches sharing nodes, refused since the foreach
// node came) are not applied, so runs in flight never fail for them. Names it calls
// are checked at run time.
func ParsePinned(code []byte) (*Definition, error) {
	return parse(code, Catalog{}, true)
}

func parse(code []byte, cat Catalog, pinned bool) (*Definition, error) {
	p := &parser{cat: cat, pinned: pinned, refs: refs{nodes: map[string]bool{}, signals: map[string]bool{}}}
	def := p.parse(code)
	if len(p.problems) > 0 {
		return nil, &ValidationError{Problems: p.problems}
	}
	return def, nil
}

type parser struct {
	cat      Catalog
	pinned   bool
	refs     refs
	problems []Problem
	pending  []pendingCompile
}

// pendingCompile is a template or expression of a node, compiled once the foreach
// variables in scope of the node are known.
type pendingCompile struct {
	node, field string
	value       any    // a template's decoded JSON
	source      string // an expression's source
	tmpl        *Template
	expr        *Expr
}

func (p *parser) problem(kind ProblemKind, node, field, format string, args ...any) {
	if len(p.problems) < maxProblems {
		p.problems = append(p.problems, Problem{Node: node, Field: field, Message: fmt.Sprintf(format, args...), Kind: kind})
	}
}

// fail records a shape problem (one a JSON Schema can express).
func (p *parser) fail(node, field, format string, args ...any) {
	p.problem(KindShape, node, field, format, args...)
}

func (p *parser) parse(code []byte) *Definition {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(code, &top); err != nil || top == nil {
		if err == nil {
			err = fmt.Errorf("got %s", compact(code))
		}
		p.fail("", "", "not a JSON object: %s", err)
		return nil
	}
	p.unknownFields("", "definition", top, topFields)

	if raw, ok := top["version"]; !ok {
		p.fail("", "version", `"version" is missing (expected 1)`)
	} else if v, ok := wholeNumber(raw); !ok || v != 1 {
		p.fail("", "version", `"version" must be 1, got %s`, compact(raw))
	}

	def := &Definition{Nodes: map[string]*Node{}, Waits: map[string]bool{}}
	if raw, ok := top["start"]; !ok {
		p.fail("", "start", `"start" is missing`)
	} else if err := json.Unmarshal(raw, &def.Start); err != nil || def.Start == "" {
		p.fail("", "start", `"start" must be a node id, got %s`, compact(raw))
		def.Start = ""
	}
	if raw, ok := top["timeout"]; ok {
		def.Timeout = p.positiveDuration("", "timeout", raw)
	}

	var nodes map[string]json.RawMessage
	if raw, ok := top["nodes"]; !ok {
		p.fail("", "nodes", `"nodes" is missing`)
		return def
	} else if err := json.Unmarshal(raw, &nodes); err != nil || nodes == nil {
		p.fail("", "nodes", `"nodes" must be an object of node id -> node, got %s`, compact(raw))
		return def
	}
	if len(nodes) == 0 {
		p.fail("", "nodes", `"nodes" is empty`)
	}
	for _, id := range slices.Sorted(maps.Keys(nodes)) {
		if n := p.node(id, nodes[id]); n != nil {
			def.Nodes[id] = n
		}
	}
	if def.Start != "" && nodes != nil {
		if _, ok := nodes[def.Start]; !ok {
			p.problem(KindReference, "", "start", `"start" names node %q, which does not exist`, def.Start)
		}
	}
	p.references(def, nodes)
	scopes := p.regions(def)
	p.compile(scopes)
	p.collect(def)
	return def
}

func (p *parser) node(id string, raw json.RawMessage) *Node {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		p.fail(id, "", "must be an object, got %s", compact(raw))
		return nil
	}
	n := &Node{ID: id}
	if !p.str(id, fields, "type", &n.Type, true) {
		return nil
	}
	allowed, ok := fieldsOf[n.Type]
	if !ok {
		p.fail(id, "type", "unknown type %q (known: %s)", n.Type, strings.Join(nodeTypes, ", "))
		return nil
	}
	p.unknownFields(id, n.Type, fields, append(slices.Clone(allowed), commonFields...))

	switch n.Type {
	case TypeActivity:
		if p.str(id, fields, "activity", &n.Activity, true) && p.cat.Activity != nil && !p.cat.Activity(n.Activity) {
			p.problem(KindCatalog, id, "activity", "unknown activity %q (built in: echo, log, http.request; or an active component of the project)", n.Activity)
		}
		n.Input = p.template(id, fields, "input")
		n.Timeout = DefaultActivityTimeout
		if raw, ok := fields["timeout"]; ok {
			n.Timeout = p.positiveDuration(id, "timeout", raw)
		}
		n.Retry = p.retry(id, fields)
		p.str(id, fields, "next", &n.Next, false)
		n.Catch = p.catch(id, fields)
	case TypeCondition:
		n.If = p.condition(id, fields["if"], "if", true)
		p.str(id, fields, "then", &n.Then, false)
		p.str(id, fields, "else", &n.Else, false)
	case TypeSleep:
		_, hasDuration := fields["duration"]
		_, hasUntil := fields["until"]
		switch {
		case hasDuration && hasUntil:
			p.fail(id, "until", `takes "duration" or "until", not both`)
		case hasUntil:
			n.Until = p.template(id, fields, "until")
			p.timeOrTemplate(id, fields, "until")
		default:
			n.Duration = p.durationTemplate(id, fields, "duration", true)
		}
		p.str(id, fields, "next", &n.Next, false)
	case TypeParallel:
		n.Branches = p.ids(id, fields, "branches")
		p.str(id, fields, "next", &n.Next, false)
		n.Catch = p.catch(id, fields)
	case TypeWaitSignal:
		_, hasSignal := fields["signal"]
		_, hasAny := fields["any"]
		switch {
		case hasSignal && hasAny:
			p.fail(id, "any", `takes "signal" or "any", not both`)
		case hasAny:
			n.Any = p.signalRoutes(id, fields)
			if _, ok := fields["next"]; ok {
				p.fail(id, "next", `"next" does not go with "any": each signal of "any" names its own next node`)
			}
		default:
			p.str(id, fields, "signal", &n.Signal, true)
		}
		n.WaitTimeout = p.durationTemplate(id, fields, "timeout", false)
		p.str(id, fields, "next", &n.Next, false)
		p.str(id, fields, "on_timeout", &n.OnTimeout, false)
		if n.OnTimeout != "" && n.WaitTimeout == nil {
			p.fail(id, "on_timeout", `"on_timeout" needs a "timeout"`)
		}
	case TypeChildWorkflow:
		if p.str(id, fields, "workflow", &n.Workflow, true) && p.cat.Workflow != nil && !p.cat.Workflow(n.Workflow) {
			p.problem(KindCatalog, id, "workflow", "child workflow %q is not an active workflow of this project", n.Workflow)
		}
		n.Input = p.template(id, fields, "input")
		p.str(id, fields, "next", &n.Next, false)
		n.Catch = p.catch(id, fields)
	case TypeReturn:
		n.Value = p.template(id, fields, "value")
	case TypeFail:
		n.Message = p.template(id, fields, "message")
		if _, ok := fields["message"]; !ok {
			p.fail(id, "message", `"message" is missing`)
		}
	case TypeForeach:
		n.Items = p.template(id, fields, "items")
		if _, ok := fields["items"]; !ok {
			p.fail(id, "items", `"items" is missing`)
		}
		if p.str(id, fields, "as", &n.As, true) {
			p.variable(id, "as", n.As)
		}
		n.Index = DefaultIndex
		if p.str(id, fields, "index", &n.Index, false) {
			p.variable(id, "index", n.Index)
		} else {
			n.Index = DefaultIndex
		}
		if n.As != "" && n.As == n.Index {
			p.problem(KindStructure, id, "index", "%q is already the name of the item (\"as\")", n.Index)
		}
		p.str(id, fields, "body", &n.Body, true)
		n.Concurrency = 1
		if raw, ok := fields["concurrency"]; ok {
			if c, ok := wholeNumber(raw); !ok || c < 1 || c > MaxConcurrency {
				p.fail(id, "concurrency", `"concurrency" must be a whole number from 1 to %d, got %s`, MaxConcurrency, compact(raw))
			} else {
				n.Concurrency = int(c)
			}
		}
		p.str(id, fields, "next", &n.Next, false)
		n.Catch = p.catch(id, fields)
	case TypeSet:
		n.Values = p.template(id, fields, "values")
		if _, ok := fields["values"]; !ok {
			p.fail(id, "values", `"values" is missing`)
		}
		p.str(id, fields, "next", &n.Next, false)
	case TypeSwitch:
		n.Cases = p.cases(id, fields)
		p.str(id, fields, "default", &n.Default, false)
	case TypeContinueAsNew:
		n.Input = p.template(id, fields, "input")
		if _, ok := fields["input"]; !ok {
			p.fail(id, "input", `"input" is missing (the new run's input)`)
		}
	}
	return n
}

// edges are the nodes n may go to next on its own path (not into branches or bodies).
func (n *Node) edges() []edge {
	var out []edge
	add := func(field, target string) {
		if target != "" {
			out = append(out, edge{field, target})
		}
	}
	add("next", n.Next)
	add("then", n.Then)
	add("else", n.Else)
	add("on_timeout", n.OnTimeout)
	for i, c := range n.Cases {
		add(fmt.Sprintf("cases[%d].next", i), c.Next)
	}
	add("default", n.Default)
	for i, r := range n.Any {
		add(fmt.Sprintf("any[%d].next", i), r.Next)
	}
	for i, c := range n.Catch {
		add(fmt.Sprintf("catch[%d].next", i), c.Next)
	}
	return out
}

type edge struct{ field, target string }

// references checks that every node id mentioned exists.
func (p *parser) references(def *Definition, nodes map[string]json.RawMessage) {
	for _, id := range slices.Sorted(maps.Keys(def.Nodes)) {
		n := def.Nodes[id]
		check := func(field, target string) {
			if _, ok := nodes[target]; target != "" && !ok {
				p.problem(KindReference, id, field, "%q names node %q, which does not exist", field, target)
			}
		}
		for _, e := range n.edges() {
			check(e.field, e.target)
		}
		for i, b := range n.Branches {
			check(fmt.Sprintf("branches[%d]", i), b)
		}
		check("body", n.Body)
	}
}

// collect checks what expressions read and lists what the definition calls.
func (p *parser) collect(def *Definition) {
	activities, children, signals := map[string]bool{}, map[string]bool{}, maps.Clone(p.refs.signals)
	for _, n := range def.Nodes {
		if n.Activity != "" {
			activities[n.Activity] = true
		}
		if n.Workflow != "" {
			children[n.Workflow] = true
		}
		if n.Signal != "" {
			def.Waits[n.Signal] = true
		}
		for _, r := range n.Any {
			def.Waits[r.Signal] = true
		}
	}
	for name := range def.Waits {
		signals[name] = true
	}
	for _, ref := range slices.Sorted(maps.Keys(p.refs.nodes)) {
		if _, ok := def.Nodes[ref]; !ok {
			p.problem(KindReference, "", "", "an expression reads nodes.%s, but there is no node %q", ref, ref)
		}
	}
	def.Signals = slices.Sorted(maps.Keys(signals))
	def.Activities = slices.Sorted(maps.Keys(activities))
	def.Children = slices.Sorted(maps.Keys(children))
}

// compile compiles every template and expression, with the foreach variables in
// scope of its node.
func (p *parser) compile(scopes map[string][]string) {
	for _, c := range p.pending {
		p.refs.loop = scopes[c.node]
		if c.tmpl != nil {
			t, err := compileTemplate(c.value, &p.refs)
			if err != nil {
				p.problem(KindExpression, c.node, c.field, "%q: %s", c.field, err)
				continue
			}
			*c.tmpl = *t
			continue
		}
		e, err := compileExpr(c.source, &p.refs)
		if err != nil {
			p.problem(KindExpression, c.node, c.field, "%q: %s", c.field, err)
			continue
		}
		*c.expr = *e
	}
	p.refs.loop = nil
}

func (p *parser) unknownFields(node, what string, fields map[string]json.RawMessage, allowed []string) {
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if !slices.Contains(allowed, k) {
			where := what
			if node != "" {
				where = "(" + what + ")"
			}
			p.fail(node, k, "%s: unknown field %q (allowed: %s)", where, k, strings.Join(allowed, ", "))
		}
	}
}

// str decodes a string field; it reports whether a non-empty value was found. null
// is the same as a missing field.
func (p *parser) str(id string, fields map[string]json.RawMessage, name string, dst *string, required bool) bool {
	return p.strAt(id, fields, name, name, dst, required)
}

// strAt is str for a field whose path in the node is path.
func (p *parser) strAt(id string, fields map[string]json.RawMessage, name, path string, dst *string, required bool) bool {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		if required {
			p.fail(id, path, "%q is missing", path)
		}
		return false
	}
	if err := json.Unmarshal(raw, dst); err != nil || *dst == "" {
		p.fail(id, path, "%q must be a non-empty string, got %s", path, compact(raw))
		*dst = ""
		return false
	}
	return true
}

// ids decodes a non-empty array of node ids.
func (p *parser) ids(id string, fields map[string]json.RawMessage, name string) []string {
	raw, ok := fields[name]
	if !ok {
		p.fail(id, name, "%q is missing", name)
		return nil
	}
	var out []string
	if err := json.Unmarshal(raw, &out); err != nil || len(out) == 0 || slices.Contains(out, "") {
		p.fail(id, name, "%q must be a non-empty array of node ids, got %s", name, compact(raw))
		return nil
	}
	return out
}

// objects decodes an array of objects whose fields are only those allowed.
func (p *parser) objects(id string, fields map[string]json.RawMessage, name, shape string, allowed ...string) []map[string]json.RawMessage {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	var items []map[string]json.RawMessage
	err := json.Unmarshal(raw, &items)
	if err != nil || len(items) == 0 || slices.ContainsFunc(items, func(m map[string]json.RawMessage) bool { return m == nil }) {
		p.fail(id, name, "%q must be a non-empty array of %s, got %s", name, shape, compact(raw))
		return nil
	}
	for i, item := range items {
		for _, k := range slices.Sorted(maps.Keys(item)) {
			if !slices.Contains(allowed, k) {
				p.fail(id, fmt.Sprintf("%s[%d].%s", name, i, k), "%s[%d]: unknown field %q (allowed: %s)", name, i, k, strings.Join(allowed, ", "))
			}
		}
	}
	return items
}

func (p *parser) catch(id string, fields map[string]json.RawMessage) []Catch {
	items := p.objects(id, fields, "catch", `{"errors": [types or "*"], "next": node id}`, "errors", "next")
	out := make([]Catch, 0, len(items))
	for i, item := range items {
		var c Catch
		field := fmt.Sprintf("catch[%d]", i)
		if raw, ok := item["errors"]; !ok {
			p.fail(id, field+".errors", "%s.errors is missing", field)
		} else if err := json.Unmarshal(raw, &c.Errors); err != nil || len(c.Errors) == 0 || slices.Contains(c.Errors, "") {
			p.fail(id, field+".errors", `%s.errors must be a non-empty array of failure types (or "*"), got %s`, field, compact(raw))
		}
		p.strAt(id, item, "next", field+".next", &c.Next, true)
		out = append(out, c)
	}
	return out
}

func (p *parser) cases(id string, fields map[string]json.RawMessage) []Case {
	if _, ok := fields["cases"]; !ok {
		p.fail(id, "cases", `"cases" is missing`)
		return nil
	}
	items := p.objects(id, fields, "cases", `{"if": expression, "next": node id}`, "if", "next")
	out := make([]Case, 0, len(items))
	for i, item := range items {
		field := fmt.Sprintf("cases[%d]", i)
		c := Case{If: p.condition(id, item["if"], field+".if", true)}
		p.strAt(id, item, "next", field+".next", &c.Next, false)
		out = append(out, c)
	}
	return out
}

func (p *parser) signalRoutes(id string, fields map[string]json.RawMessage) []SignalRoute {
	items := p.objects(id, fields, "any", `{"signal": name, "next": node id}`, "signal", "next")
	out := make([]SignalRoute, 0, len(items))
	seen := map[string]bool{}
	for i, item := range items {
		var r SignalRoute
		field := fmt.Sprintf("any[%d]", i)
		if raw, ok := item["signal"]; !ok || json.Unmarshal(raw, &r.Signal) != nil || r.Signal == "" {
			p.fail(id, field+".signal", "%s.signal must be a non-empty string (a signal name), got %s", field, compact(raw))
		} else if seen[r.Signal] {
			p.problem(KindStructure, id, field+".signal", "signal %q is listed twice", r.Signal)
		}
		seen[r.Signal] = true
		if raw, ok := item["next"]; ok && string(raw) != "null" {
			if json.Unmarshal(raw, &r.Next) != nil || r.Next == "" {
				p.fail(id, field+".next", "%s.next must be a node id, got %s", field, compact(raw))
				r.Next = ""
			}
		}
		out = append(out, r)
	}
	return out
}

// variable checks a foreach variable's name: an identifier expressions can use that
// is no other name of the expression language.
func (p *parser) variable(id, field, name string) {
	switch {
	case !identifier.MatchString(name):
		p.fail(id, field, "%q must be a name like item or row_2 (letters, digits, _; not starting with a digit), got %q", field, name)
	case reserved[name]:
		p.fail(id, field, "%q cannot be %q: that name means something else in expressions", field, name)
	}
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reserved are the names a foreach variable cannot take: the scope's, the expression
// language's words and functions.
var reserved = func() map[string]bool {
	r := map[string]bool{}
	for _, w := range []string{"input", "nodes", "signals", "workflow", "true", "false", "nil",
		"not", "in", "or", "and", "matches", "contains", "startsWith", "endsWith", "let", "if", "else",
		"keys", "values", "toPairs", "now"} {
		r[w] = true
	}
	for _, b := range builtin.Builtins {
		r[b.Name] = true
	}
	return r
}()

// template records a template field, compiled later (see compile).
func (p *parser) template(id string, fields map[string]json.RawMessage, name string) *Template {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		p.fail(id, name, "%q is not valid JSON: %s", name, err)
		return nil
	}
	t := &Template{}
	p.pending = append(p.pending, pendingCompile{node: id, field: name, value: v, tmpl: t})
	return t
}

// timeOrTemplate checks that a field is an RFC 3339 time or a template giving one.
func (p *parser) timeOrTemplate(id string, fields map[string]json.RawMessage, name string) {
	var s string
	raw := fields[name]
	if json.Unmarshal(raw, &s) != nil || string(raw) == "null" {
		p.fail(id, name, "%q must be a string (an RFC 3339 time or a ${...} template giving one), got %s", name, compact(raw))
		return
	}
	if strings.Contains(s, "${") {
		return
	}
	if !timeRE.MatchString(s) {
		p.fail(id, name, "%q must be an RFC 3339 time like \"2030-01-02T15:04:05Z\" or a ${...} template giving one, got %q", name, s)
	} else if _, err := time.Parse(time.RFC3339, s); err != nil {
		p.problem(KindStructure, id, name, "%q: %q is not a time: %s", name, s, err)
	}
}

// Durations: what time.ParseDuration accepts, as the schema's patterns say it.
const (
	durationNumber = `([0-9]+(\.[0-9]*)?|\.[0-9]+)`
	zeroNumber     = `(0+(\.0*)?|\.0+)`
	durationUnit   = `(ns|us|µs|μs|ms|s|m|h)`
	// DurationPattern matches the durations >= 0 ("-0s" is 0).
	DurationPattern = `^(\+?(0|(` + durationNumber + durationUnit + `)+)|-(0|(` + zeroNumber + durationUnit + `)+))$`
	// ZeroDurationPattern matches the durations equal to 0.
	ZeroDurationPattern = `^[-+]?(0|(` + zeroNumber + durationUnit + `)+)$`
	// TimePattern matches RFC 3339 times.
	TimePattern = `^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[-+][0-9]{2}:[0-9]{2})$`
)

var (
	durationRE = regexp.MustCompile(DurationPattern)
	zeroRE     = regexp.MustCompile(ZeroDurationPattern)
	timeRE     = regexp.MustCompile(TimePattern)
)

// parseDuration parses a duration >= 0 (> 0 when positive); a string of the right
// shape that Go cannot hold (over about 290 years) is a problem of its own kind.
func (p *parser) parseDuration(id, field, s string, positive bool) (time.Duration, bool) {
	what := "a duration"
	if positive {
		what = "a positive duration"
	}
	if !durationRE.MatchString(s) || (positive && zeroRE.MatchString(s)) {
		p.fail(id, field, "%q must be %s like \"30s\" or \"5m\", got %q", field, what, s)
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.problem(KindStructure, id, field, "%q: %q is too long a duration", field, s)
		return 0, false
	}
	return d, true
}

func (p *parser) positiveDuration(id, name string, raw json.RawMessage) time.Duration {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || string(raw) == "null" {
		p.fail(id, name, "%q must be a duration string like \"30s\" or \"5m\", got %s", name, compact(raw))
		return 0
	}
	d, _ := p.parseDuration(id, name, s, true)
	return d
}

// durationTemplate accepts a literal Go duration or a template producing one.
func (p *parser) durationTemplate(id string, fields map[string]json.RawMessage, name string, required bool) *Template {
	raw, ok := fields[name]
	if !ok {
		if required {
			p.fail(id, name, "%q is missing", name)
		}
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || string(raw) == "null" {
		p.fail(id, name, "%q must be a duration string like \"30s\" or a ${...} template, got %s", name, compact(raw))
		return nil
	}
	if !strings.Contains(s, "${") {
		if _, ok := p.parseDuration(id, name, s, false); !ok {
			return nil
		}
	}
	return p.template(id, fields, name)
}

// condition records an expression field (a bare expression or one ${...}), compiled
// later.
func (p *parser) condition(id string, raw json.RawMessage, field string, required bool) *Expr {
	if raw == nil {
		if required {
			p.fail(id, field, "%q is missing", field)
		}
		return nil
	}
	var src string
	if err := json.Unmarshal(raw, &src); err != nil || strings.Trim(src, " \t\n\f\r") == "" {
		p.fail(id, field, "%q must be an expression string, got %s", field, compact(raw))
		return nil
	}
	src = strings.TrimSpace(src)
	if parts, err := splitTemplate(src); err == nil && len(parts) == 1 && parts[0].isExpr {
		src = parts[0].text
	}
	e := &Expr{source: src}
	p.pending = append(p.pending, pendingCompile{node: id, field: field, source: src, expr: e})
	return e
}

func (p *parser) retry(id string, fields map[string]json.RawMessage) *RetryPolicy {
	raw, ok := fields["retry"]
	if !ok || string(raw) == "null" {
		return nil
	}
	var r struct {
		MaximumAttempts    json.RawMessage `json:"maximum_attempts"`
		InitialInterval    *string         `json:"initial_interval"`
		BackoffCoefficient json.RawMessage `json:"backoff_coefficient"`
		MaximumInterval    *string         `json:"maximum_interval"`
		NonRetryableErrors []string        `json:"non_retryable_errors"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		p.fail(id, "retry", "\"retry\" must be an object with maximum_attempts, initial_interval, backoff_coefficient, maximum_interval, non_retryable_errors: %s", err)
		return nil
	}
	out := &RetryPolicy{NonRetryableErrors: r.NonRetryableErrors}
	if slices.Contains(r.NonRetryableErrors, "") {
		p.fail(id, "retry.non_retryable_errors", "retry.non_retryable_errors must list failure types (non-empty strings)")
	}
	if r.MaximumAttempts != nil && string(r.MaximumAttempts) != "null" {
		n, ok := wholeNumber(r.MaximumAttempts)
		if !ok || n < 0 || n > 1<<30 {
			p.fail(id, "retry.maximum_attempts", "retry.maximum_attempts must be a whole number >= 0 (0 = unlimited), got %s", compact(r.MaximumAttempts))
		}
		out.MaximumAttempts = int32(n)
	}
	interval := func(name string, s *string) time.Duration {
		if s == nil {
			return 0
		}
		d, _ := p.parseDuration(id, "retry."+name, *s, true)
		return d
	}
	out.InitialInterval = interval("initial_interval", r.InitialInterval)
	out.MaximumInterval = interval("maximum_interval", r.MaximumInterval)
	if r.BackoffCoefficient != nil && string(r.BackoffCoefficient) != "null" {
		var f float64
		if err := json.Unmarshal(r.BackoffCoefficient, &f); err != nil || f < 1 {
			p.fail(id, "retry.backoff_coefficient", "retry.backoff_coefficient must be a number >= 1, got %s", compact(r.BackoffCoefficient))
		}
		out.BackoffCoefficient = f
	}
	if out.MaximumInterval > 0 && out.InitialInterval > out.MaximumInterval {
		p.problem(KindStructure, id, "retry.initial_interval", "retry.initial_interval (%s) is longer than retry.maximum_interval (%s)", out.InitialInterval, out.MaximumInterval)
	}
	return out
}

// wholeNumber decodes a JSON number with no fractional part (3, 3.0 or 3e0).
func wholeNumber(raw json.RawMessage) (int64, bool) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

func compact(raw []byte) string {
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
