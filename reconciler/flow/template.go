package flow

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// Scope is what expressions see: the workflow's input, the output (and the caught
// failure) of every node that has run (nodes.<id>.output, nodes.<id>.error), the last
// payload consumed of each signal (signals.<name>), facts about the run (workflow.id,
// run_id, type, attempt, start_time) and, inside a foreach body, the foreach variables
// by their names (see regions.go: the names are rewritten into reads of Loop).
//
// bound.go's rewriting and budget.go's walker know this struct: a new field that can
// hold a value of any size must be walked there too.
type Scope struct {
	Input    any            `expr:"input"`
	Nodes    map[string]any `expr:"nodes"`
	Signals  map[string]any `expr:"signals"`
	Workflow map[string]any `expr:"workflow"`
	Loop     map[string]any `expr:"foreach variables"`

	budget *budget // of the evaluation running; expressions cannot see it
}

// workflowFields are the fields of workflow in expressions.
var workflowFields = []string{"id", "run_id", "type", "attempt", "start_time"}

// Expr is a compiled expression (see bound.go for how it is bounded).
type Expr struct {
	source  string
	program *vm.Program
	cost    int64 // steps to run each node once
	bytes   int64 // what its array and map literals allocate, run once
}

// refs collects what expressions of a definition refer to, for validation, and says
// which foreach variables are in scope of the expression being compiled.
type refs struct {
	nodes   map[string]bool
	signals map[string]bool
	unknown []string // workflow.<name> that does not exist
	loop    []string
}

// Eval runs the expression in scope within DefaultLimits and returns a JSON-compatible
// value.
func (e *Expr) Eval(s Scope) (any, error) { return e.EvalWithin(s, Limits{}) }

// EvalWithin is Eval within l (zero fields take DefaultLimits).
func (e *Expr) EvalWithin(s Scope, l Limits) (any, error) {
	out, _, err := e.evalCounted(s, l)
	return out, err
}

// evalCounted is EvalWithin, and says how many steps the evaluation used.
func (e *Expr) evalCounted(s Scope, l Limits) (any, int64, error) {
	b := newBudget(l)
	out, err := e.run(s, b)
	if err != nil {
		return nil, b.used(), err
	}
	out, err = b.result(out)
	if err != nil {
		return nil, b.used(), &evalError{source: e.source, err: err}
	}
	return out, b.used(), nil
}

// result checks the size of v as JSON against the output limit, and normalizes it.
func (b *budget) result(v any) (any, error) {
	n, err := b.jsonSize(v, "result")
	if err != nil {
		return nil, err
	}
	if err := b.output(n, "result"); err != nil {
		return nil, err
	}
	return normalize(v)
}

func (e *Expr) String() string { return e.source }

// refCollector records nodes.<id> and signals.<name> references.
type refCollector struct{ refs *refs }

func (c *refCollector) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok {
		return
	}
	prop, ok := m.Property.(*ast.StringNode)
	if !ok {
		return
	}
	switch id.Value {
	case "nodes":
		c.refs.nodes[prop.Value] = true
	case "signals":
		c.refs.signals[prop.Value] = true
	case "workflow":
		if !slices.Contains(workflowFields, prop.Value) {
			c.refs.unknown = append(c.refs.unknown, prop.Value)
		}
	}
}

// Template is a JSON value whose strings may hold ${expr}. A string that is exactly
// one ${expr} takes the expression's value with its JSON type; any other string with
// ${...} parts becomes text. $${ writes a literal ${.
type Template struct {
	root tnode
}

type tnode interface {
	eval(Scope, *budget) (any, error)
}

type literal struct {
	v    any
	size int64 // as JSON
}

func newLiteral(v any) literal {
	b, err := json.Marshal(v)
	if err != nil {
		return literal{v: v}
	}
	return literal{v: v, size: int64(len(b))}
}

func (l literal) eval(_ Scope, b *budget) (any, error) {
	if err := b.output(l.size, "template"); err != nil {
		return nil, err
	}
	return l.v, nil
}

type whole struct{ e *Expr }

func (w whole) eval(s Scope, b *budget) (any, error) {
	v, err := w.e.run(s, b)
	if err != nil {
		return nil, err
	}
	v, err = b.result(v)
	if err != nil {
		return nil, &evalError{source: w.e.source, err: err}
	}
	return v, nil
}

type textPart struct {
	text string
	e    *Expr
}

type interpolation []textPart

func (p interpolation) eval(s Scope, b *budget) (any, error) {
	var out strings.Builder
	for _, part := range p {
		t := part.text
		if part.e != nil {
			v, err := part.e.run(s, b)
			if err != nil {
				return nil, err
			}
			if t, err = b.text(v); err != nil {
				return nil, &evalError{source: part.e.source, err: err}
			}
		}
		if err := b.output(jsonStringLen(t)-2, "template"); err != nil {
			return nil, err
		}
		out.WriteString(t)
	}
	if err := b.output(2, "template"); err != nil {
		return nil, err
	}
	return out.String(), nil
}

// text is text(v) once v is known to be small enough.
func (b *budget) text(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	n, err := b.jsonSize(v, "text")
	if err != nil {
		return "", err
	}
	if n > b.out {
		return "", &LimitError{Limit: "output", Max: b.lim.Output, Op: "template", Need: n}
	}
	return text(v), nil
}

type object struct {
	keys  []string
	items []tnode
}

func (o object) eval(s Scope, b *budget) (any, error) {
	var overhead int64 = 2
	for _, k := range o.keys {
		overhead += jsonStringLen(k) + 2
	}
	if err := b.output(overhead, "template"); err != nil {
		return nil, err
	}
	out := make(map[string]any, len(o.keys))
	for i, k := range o.keys {
		v, err := o.items[i].eval(s, b)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

type array []tnode

func (a array) eval(s Scope, b *budget) (any, error) {
	if err := b.output(int64(2+len(a)), "template"); err != nil {
		return nil, err
	}
	out := make([]any, len(a))
	for i, item := range a {
		v, err := item.eval(s, b)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// compileTemplate compiles a decoded JSON value (from encoding/json with UseNumber off).
func compileTemplate(v any, r *refs) (*Template, error) {
	root, err := compileValue(v, r)
	if err != nil {
		return nil, err
	}
	return &Template{root: root}, nil
}

func compileValue(v any, r *refs) (tnode, error) {
	switch v := v.(type) {
	case string:
		return compileString(v, r)
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		o := object{keys: keys, items: make([]tnode, len(keys))}
		constant := true
		for i, k := range keys {
			item, err := compileValue(v[k], r)
			if err != nil {
				return nil, err
			}
			o.items[i] = item
			_, isLit := item.(literal)
			constant = constant && isLit
		}
		if constant {
			return newLiteral(v), nil
		}
		return o, nil
	case []any:
		a := make(array, len(v))
		constant := true
		for i, item := range v {
			n, err := compileValue(item, r)
			if err != nil {
				return nil, err
			}
			a[i] = n
			_, isLit := n.(literal)
			constant = constant && isLit
		}
		if constant {
			return newLiteral(v), nil
		}
		return a, nil
	default:
		return newLiteral(v), nil
	}
}

func compileString(s string, r *refs) (tnode, error) {
	parts, err := splitTemplate(s)
	if err != nil {
		return nil, err
	}
	if len(parts) == 1 && parts[0].isExpr {
		e, err := compileExpr(parts[0].text, r)
		if err != nil {
			return nil, err
		}
		return whole{e}, nil
	}
	hasExpr := false
	out := make(interpolation, 0, len(parts))
	for _, p := range parts {
		if !p.isExpr {
			out = append(out, textPart{text: p.text})
			continue
		}
		hasExpr = true
		e, err := compileExpr(p.text, r)
		if err != nil {
			return nil, err
		}
		out = append(out, textPart{e: e})
	}
	if !hasExpr {
		var b strings.Builder
		for _, p := range out {
			b.WriteString(p.text)
		}
		return newLiteral(b.String()), nil
	}
	return out, nil
}

type rawPart struct {
	text   string
	isExpr bool
}

// splitTemplate cuts s into text and ${expression} parts. Braces and quotes inside an
// expression are matched, so ${ {"a": "}"}.a } is one expression.
func splitTemplate(s string) ([]rawPart, error) {
	var parts []rawPart
	var lit strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			lit.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			lit.WriteByte(s[i])
			i++
			continue
		}
		end, err := matchBrace(s, i+2)
		if err != nil {
			return nil, err
		}
		if lit.Len() > 0 {
			parts = append(parts, rawPart{text: lit.String()})
			lit.Reset()
		}
		body := strings.TrimSpace(s[i+2 : end])
		if body == "" {
			return nil, fmt.Errorf("empty ${} in %q", s)
		}
		parts = append(parts, rawPart{text: body, isExpr: true})
		i = end + 1
	}
	if lit.Len() > 0 || len(parts) == 0 {
		parts = append(parts, rawPart{text: lit.String()})
	}
	return parts, nil
}

// matchBrace returns the index of the } closing an expression that starts at from.
func matchBrace(s string, from int) (int, error) {
	depth := 0
	for i := from; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\'', '`':
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(s) {
				return 0, fmt.Errorf("unterminated string in ${...} of %q", s)
			}
			i = j
		case '{':
			depth++
		case '}':
			if depth == 0 {
				return i, nil
			}
			depth--
		}
	}
	return 0, fmt.Errorf("unclosed ${ in %q", s)
}

// Eval evaluates the template in scope within DefaultLimits.
func (t *Template) Eval(s Scope) (any, error) { return t.EvalWithin(s, Limits{}) }

// EvalWithin evaluates the template in scope; all its expressions share one budget of
// l (zero fields take DefaultLimits), and the result is at most l.Output bytes of JSON.
func (t *Template) EvalWithin(s Scope, l Limits) (any, error) {
	out, _, err := t.evalCounted(s, l)
	return out, err
}

// evalCounted is EvalWithin, and says how many steps the evaluation used.
func (t *Template) evalCounted(s Scope, l Limits) (any, int64, error) {
	if t == nil {
		return nil, 0, nil
	}
	b := newBudget(l)
	out, err := t.root.eval(s, b)
	return out, b.used(), err
}

// text is how a value reads inside a string: strings as they are, anything else as JSON.
func text(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case nil:
		return "null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// normalize turns what expr returns into plain JSON values (time and duration values
// become strings), so outputs look the same before and after a Temporal round trip.
func normalize(v any) (any, error) {
	switch v := v.(type) {
	case nil, bool, string, float64, int, int64, map[string]any, []any:
		return v, nil
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), nil
	case time.Duration:
		return v.String(), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("value of type %T cannot be used as JSON: %w", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func sortedMapKeys(args []any, fn string) (reflect.Value, []reflect.Value, error) {
	if len(args) != 1 {
		return reflect.Value{}, nil, fmt.Errorf("%s: expected 1 argument, got %d", fn, len(args))
	}
	m := reflect.ValueOf(args[0])
	if m.Kind() != reflect.Map {
		return reflect.Value{}, nil, fmt.Errorf("%s: expected a map, got %T", fn, args[0])
	}
	keys := m.MapKeys()
	// By their text, then their type, each formatted once (not at every comparison).
	type key struct {
		text, typ string
		v         reflect.Value
	}
	ks := make([]key, len(keys))
	for i, k := range keys {
		if s, ok := k.Interface().(string); ok {
			ks[i] = key{text: s, typ: "string", v: k}
		} else {
			ks[i] = key{text: fmt.Sprint(k.Interface()), typ: fmt.Sprintf("%T", k.Interface()), v: k}
		}
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].text != ks[j].text {
			return ks[i].text < ks[j].text
		}
		return ks[i].typ < ks[j].typ
	})
	for i := range ks {
		keys[i] = ks[i].v
	}
	return m, keys, nil
}

func sortedKeys(args ...any) (any, error) {
	_, keys, err := sortedMapKeys(args, "keys")
	if err != nil {
		return nil, err
	}
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = k.Interface()
	}
	return out, nil
}

func sortedValues(args ...any) (any, error) {
	m, keys, err := sortedMapKeys(args, "values")
	if err != nil {
		return nil, err
	}
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = m.MapIndex(k).Interface()
	}
	return out, nil
}

func sortedPairs(args ...any) (any, error) {
	m, keys, err := sortedMapKeys(args, "toPairs")
	if err != nil {
		return nil, err
	}
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = []any{k.Interface(), m.MapIndex(k).Interface()}
	}
	return out, nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.Join(strings.Fields(s), " ")
}
