package flow

// The budgeted functions that compileExpr's rewriting calls (see bound.go).

import (
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/vm/runtime"
)

// boundFunctions are the budgeted functions the rewriter calls, by name.
var boundFunctions = map[string]*builtin.Function{}

func init() {
	// The operators: their result types follow the operands.
	define("add", boundAdd, func(args []reflect.Type) (reflect.Type, error) {
		a, b := args[1], args[2]
		switch {
		case a.Kind() == reflect.String && b.Kind() == reflect.String:
			return a, nil
		case a == reflect.TypeOf(time.Time{}) && b == reflect.TypeOf(time.Duration(0)):
			return a, nil
		case a == reflect.TypeOf(time.Duration(0)) && b == reflect.TypeOf(time.Time{}):
			return b, nil
		case a == reflect.TypeOf(time.Duration(0)) && b == a:
			return a, nil
		}
		return anyType, nil
	})
	boolOp := func(name string, fn func(b *budget, x, y any) (bool, error)) {
		define(name, func(b *budget, args []any) (any, error) { return fn(b, args[0], args[1]) },
			func([]reflect.Type) (reflect.Type, error) { return boolType, nil })
	}
	boolOp("eq", boundEqual)
	boolOp("ne", func(b *budget, x, y any) (bool, error) {
		eq, err := boundEqual(b, x, y)
		return !eq, err
	})
	for op, fn := range map[string]func(a, b any) bool{
		"<": runtime.Less, ">": runtime.More, "<=": runtime.LessOrEqual, ">=": runtime.MoreOrEqual,
	} {
		boolOp(op, func(b *budget, x, y any) (bool, error) {
			if err := b.step(compareCost(x, y), op); err != nil {
				return false, err
			}
			return fn(x, y), nil
		})
	}
	boolOp("in", boundIn)
	for op, fn := range map[string]func(s, sub string) bool{
		"contains": strings.Contains, "startsWith": strings.HasPrefix, "endsWith": strings.HasSuffix,
	} {
		boolOp(op, func(b *budget, x, y any) (bool, error) {
			if runtime.IsNil(x) || runtime.IsNil(y) {
				return false, nil
			}
			s, sub := x.(string), y.(string)
			if err := b.step(fastSteps(int64(len(s)+len(sub))), op); err != nil {
				return false, err
			}
			return fn(s, sub), nil
		})
	}
	boolOp("matches", boundMatches)
	define("range", boundRange, func([]reflect.Type) (reflect.Type, error) { return reflect.TypeOf([]int{}), nil })
	identity := func(args []reflect.Type) (reflect.Type, error) { return args[1], nil }
	define("key", func(b *budget, args []any) (any, error) {
		if s, ok := args[0].(string); ok {
			if err := b.step(fastSteps(int64(len(s))), "key"); err != nil {
				return nil, err
			}
		}
		return args[0], nil
	}, identity)
	define("loop", boundLoop, identity)
	define("sortBy", boundSortBy, func([]reflect.Type) (reflect.Type, error) { return arrayType, nil })

	// The builtins: their types are the original's, with $env first.
	for name, cost := range budgetedBuiltins {
		orig := builtin.Builtins[builtin.Index[name]]
		run := callBuiltin(orig)
		defineLike(name, orig, func(b *budget, args []any) (any, error) {
			if err := cost(b, args); err != nil {
				return nil, err
			}
			return run(args)
		})
	}
	for name, fn := range ownBuiltins {
		orig := builtin.Builtins[builtin.Index[name]]
		switch name {
		case "keys":
			orig = &builtin.Function{Name: name, Func: sortedKeys}
		case "values":
			orig = &builtin.Function{Name: name, Func: sortedValues}
		case "toPairs":
			orig = &builtin.Function{Name: name, Func: sortedPairs}
		}
		defineLike(name, orig, fn)
	}
	define("arg", boundArg, identity)
	define("method", func(b *budget, args []any) (any, error) {
		return args[0], b.step(methodSteps, "method")
	}, identity)
}

// methodSteps is the price of calling a method by reflection (about 400 ns).
const methodSteps = 40

var (
	anyType   = reflect.TypeOf(new(any)).Elem()
	boolType  = reflect.TypeOf(true)
	arrayType = reflect.TypeOf([]any{})
)

// define registers a budgeted function; fn gets the arguments without $env.
func define(name string, fn func(b *budget, args []any) (any, error), validate func([]reflect.Type) (reflect.Type, error)) {
	boundFunctions[boundPrefix+name] = &builtin.Function{
		Name: boundPrefix + name,
		Func: wrap(fn),
		Validate: func(args []reflect.Type) (reflect.Type, error) {
			for i, a := range args {
				if a == nil { // nil
					args[i] = anyType
				}
			}
			return validate(args)
		},
	}
}

// defineLike registers a budgeted function with the types of orig, plus $env first.
func defineLike(name string, orig *builtin.Function, fn func(b *budget, args []any) (any, error)) {
	f := &builtin.Function{Name: boundPrefix + name, Func: wrap(fn)}
	switch {
	case orig.Validate != nil:
		f.Validate = func(args []reflect.Type) (reflect.Type, error) { return orig.Validate(args[1:]) }
	default:
		types := orig.Types
		if len(types) == 0 {
			types = []reflect.Type{orig.Type()}
		}
		for _, t := range types {
			in := []reflect.Type{scopeType}
			for i := 0; i < t.NumIn(); i++ {
				in = append(in, t.In(i))
			}
			out := make([]reflect.Type, t.NumOut())
			for i := range out {
				out[i] = t.Out(i)
			}
			f.Types = append(f.Types, reflect.FuncOf(in, out, t.IsVariadic()))
		}
	}
	boundFunctions[f.Name] = f
}

// errNoBudget means a program ran outside compileExpr's evaluation; it never should.
var errNoBudget = errors.New("expression evaluated without a budget")

// wrap takes $env off the arguments and turns a budget overrun deep in a sort into an
// error.
func wrap(fn func(b *budget, args []any) (any, error)) func(args ...any) (any, error) {
	return func(args ...any) (out any, err error) {
		s, ok := args[0].(Scope)
		if !ok || s.budget == nil {
			return nil, errNoBudget
		}
		defer func() {
			if r := recover(); r != nil {
				if le, ok := r.(*LimitError); ok {
					out, err = nil, le
					return
				}
				panic(r)
			}
		}()
		return fn(s.budget, args[1:])
	}
}

// callBuiltin calls expr's implementation of a builtin.
func callBuiltin(f *builtin.Function) func(args []any) (any, error) {
	switch {
	case f.Fast != nil:
		return func(args []any) (any, error) { return f.Fast(args[0]), nil }
	case f.Safe != nil:
		return func(args []any) (any, error) {
			out, _, err := f.Safe(args...)
			return out, err
		}
	}
	return func(args []any) (any, error) { return f.Func(args...) }
}

// The operators.

// boundArg charges for an argument of a method: 4 bytes of result per byte of string
// (time.Format's "2006" can print a 13-digit year), a walk of anything else.
func boundArg(b *budget, args []any) (any, error) {
	switch v := args[0].(type) {
	case string:
		if err := b.alloc(add(mul(int64(len(v)), 4), 64), "method"); err != nil {
			return nil, err
		}
	default:
		if !isScalar(v) {
			if err := b.valueCost(v, "method", 1); err != nil {
				return nil, err
			}
		}
	}
	return args[0], nil
}

func boundAdd(b *budget, args []any) (any, error) {
	x, y := args[0], args[1]
	if s, ok := x.(string); ok {
		if t, ok := y.(string); ok {
			if err := b.alloc(int64(len(s))+int64(len(t)), "+"); err != nil {
				return nil, err
			}
			return s + t, nil
		}
	}
	return runtime.Add(x, y), nil
}

func isScalar(v any) bool {
	switch v.(type) {
	case nil, bool, string, float64, float32, int, int8, int16, int32, int64,
		uint, uint8, uint16, uint32, uint64, time.Time, time.Duration:
		return true
	}
	return false
}

func length(v any) (int, bool) {
	switch v := v.(type) {
	case []any:
		return len(v), true
	case map[string]any:
		return len(v), true
	case []int:
		return len(v), true
	case []float64:
		return len(v), true
	case []string:
		return len(v), true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return rv.Len(), true
	}
	return 0, false
}

// equalCost charges for runtime.Equal(x, y): O(1) for scalars and for containers of
// different lengths or kinds, else at most a walk of x.
func equalCost(b *budget, x, y any, op string) error {
	if s, ok := x.(string); ok {
		if t, ok := y.(string); ok && len(s) == len(t) {
			return b.step(fastSteps(int64(len(s))), op)
		}
		return b.step(1, op)
	}
	if isScalar(x) || isScalar(y) {
		return b.step(1, op)
	}
	if nx, ok := length(x); ok {
		if ny, ok := length(y); !ok || nx != ny {
			return b.step(1, op)
		}
	}
	return b.valueCost(x, op, 3)
}

func boundEqual(b *budget, x, y any) (bool, error) {
	if err := equalCost(b, x, y, "=="); err != nil {
		return false, err
	}
	return runtime.Equal(x, y), nil
}

func compareCost(x, y any) int64 {
	if s, ok := x.(string); ok {
		if t, ok := y.(string); ok {
			return fastSteps(int64(min(len(s), len(t))))
		}
	}
	return 1
}

func boundIn(b *budget, needle, haystack any) (bool, error) {
	switch h := haystack.(type) {
	case nil:
		return false, nil
	case []any:
		if err := b.step(int64(len(h)), "in"); err != nil {
			return false, err
		}
		for _, item := range h {
			if err := equalCost(b, item, needle, "in"); err != nil {
				return false, err
			}
			if runtime.Equal(item, needle) {
				return true, nil
			}
		}
		return false, nil
	}
	rv := reflect.ValueOf(haystack)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if err := b.step(int64(rv.Len()), "in"); err != nil {
			return false, err
		}
		if !isScalar(needle) {
			if err := b.valueCost(haystack, "in", 3); err != nil {
				return false, err
			}
		}
		if s, ok := needle.(string); ok {
			if err := b.step(mul(int64(rv.Len()), fastSteps(int64(len(s)))), "in"); err != nil {
				return false, err
			}
		}
	default:
		// A map or struct lookup hashes the needle.
		if s, ok := needle.(string); ok {
			if err := b.step(fastSteps(int64(len(s))), "in"); err != nil {
				return false, err
			}
		}
	}
	return runtime.In(needle, haystack), nil
}

func boundMatches(b *budget, x, y any) (bool, error) {
	if runtime.IsNil(x) || runtime.IsNil(y) {
		return false, nil
	}
	var re *boundedRegexp
	switch p := y.(type) {
	case *boundedRegexp:
		re = p
	default:
		pattern := y.(string)
		if err := b.step(compileSteps+scanSteps(int64(len(pattern))), "matches"); err != nil {
			return false, err
		}
		n, err := patternInsts(pattern, b.lim.RegexpInsts)
		if err != nil {
			return false, err
		}
		if err := b.alloc(mul(n, 64), "matches"); err != nil {
			return false, err
		}
		compiled, err := regexp.Compile(pattern)
		if err != nil {
			return false, err
		}
		re = &boundedRegexp{re: compiled, insts: n}
	}
	var n int
	s, isString := x.(string)
	if isString {
		n = len(s)
	} else {
		n = len(x.([]byte))
	}
	// Go's regexp is linear in the input, times the program size at worst.
	if err := b.step(mul(int64(n)+1, re.insts), "matches"); err != nil {
		return false, err
	}
	if isString {
		return re.re.MatchString(s), nil
	}
	return re.re.Match(x.([]byte)), nil
}

// compileSteps is the least a regular expression costs to compile (about 2 µs).
const compileSteps = 200

func boundRange(b *budget, args []any) (any, error) {
	lo, hi := runtime.ToInt(args[0]), runtime.ToInt(args[1])
	var n int64
	if hi >= lo {
		u := uint64(hi) - uint64(lo) + 1
		n = int64(u)
		if u > 1<<62 {
			n = 1 << 62
		}
	}
	if err := b.alloc(mul(n, 8), ".."); err != nil {
		return nil, err
	}
	return runtime.MakeRange(lo, hi), nil
}

// loopBytes is what the VM keeps for each loop it runs until the evaluation ends: every
// OpBegin takes a new vm.Scope (160 bytes) from a pool that grows by doubling and is
// only reset by the next Run.
const loopBytes = 320

// boundLoop charges a predicate builtin for all its iterations before it starts.
func boundLoop(b *budget, args []any) (any, error) {
	c := args[0]
	n, ok := length(c)
	if s, isString := c.(string); isString {
		n, ok = len(s), true // the VM loops over a string's bytes
	}
	if !ok {
		return c, nil // the builtin fails on it
	}
	steps, bytes := int64(args[1].(int)), int64(args[2].(int))
	if err := b.step(mul(int64(n), steps), "loop"); err != nil {
		return nil, err
	}
	if err := b.alloc(add(mul(int64(n), bytes), loopBytes), "loop"); err != nil {
		return nil, err
	}
	return c, nil
}

// boundSortBy sorts the [item, key] pairs of sortBy's rewriting like expr's OpSort.
func boundSortBy(b *budget, args []any) (any, error) {
	pairs := args[0].([]any)
	desc := false
	if len(args) == 2 {
		order, ok := args[1].(string)
		if !ok {
			return nil, fmt.Errorf("sortBy order argument must be a string")
		}
		switch order {
		case "asc":
		case "desc":
			desc = true
		default:
			return nil, fmt.Errorf("unknown order, use asc or desc")
		}
	}
	if err := b.alloc(mul(int64(len(pairs)), 32), "sortBy"); err != nil {
		return nil, err
	}
	s := &runtime.SortBy{Desc: desc, Array: make([]any, len(pairs)), Values: make([]any, len(pairs))}
	for i, p := range pairs {
		pair := p.([]any)
		s.Array[i], s.Values[i] = pair[0], pair[1]
	}
	sort.Sort(chargedSortBy{s, b})
	return s.Array, nil
}

// chargedSortBy and chargedSort charge each comparison and panic with the LimitError
// when the budget is spent (wrap turns it back into an error).
type chargedSortBy struct {
	*runtime.SortBy
	b *budget
}

func (s chargedSortBy) Less(i, j int) bool {
	if err := s.b.step(compareCost(s.Values[i], s.Values[j]), "sortBy"); err != nil {
		panic(err)
	}
	return s.SortBy.Less(i, j)
}

type chargedSort struct {
	*runtime.Sort
	b *budget
}

func (s chargedSort) Less(i, j int) bool {
	if err := s.b.step(compareCost(s.Array[i], s.Array[j]), "sort"); err != nil {
		panic(err)
	}
	return s.Sort.Less(i, j)
}

// The builtins' costs. Each is called with the builtin's arguments, which the builtin
// itself checks afterwards (so a wrong type here just charges nothing).

func str(args []any, i int) string {
	if i < len(args) {
		if s, ok := args[i].(string); ok {
			return s
		}
	}
	return ""
}

func parseCost(b *budget, args []any) error {
	return b.step(scanSteps(int64(len(str(args, 0)))), "parse")
}

func stringCost(b *budget, args []any) error {
	before := b.steps
	n, err := b.jsonSize(args[0], "string")
	if err != nil {
		return err
	}
	if err := b.step(before-b.steps, "string"); err != nil { // fmt's reflection
		return err
	}
	// fmt's %v is at most about twice the JSON, its buffer grows by append (five times
	// the result allocated in all), and it sorts the keys of each map.
	return b.alloc(mul(add(n, 64), 12), "string")
}

func trimCost(b *budget, args []any) error {
	s, cutset := int64(len(str(args, 0))), int64(len(str(args, 1)))
	return b.step(mul(scanSteps(s), cutset/16+1), "trim")
}

func affixCost(b *budget, args []any) error {
	return b.step(fastSteps(int64(len(str(args, 1)))), "trim")
}

func caseCost(b *budget, args []any) error {
	// Case mapping can turn a byte into three (an invalid byte into U+FFFD).
	return b.alloc(mul(int64(len(str(args, 0))), 3), "upper/lower")
}

func count(s, sep string) int64 {
	if sep == "" {
		return int64(utf8.RuneCountInString(s)) + 1
	}
	return int64(strings.Count(s, sep)) + 1
}

func splitCost(b *budget, args []any) error {
	s, sep := str(args, 0), str(args, 1)
	if err := b.step(fastSteps(int64(len(s))), "split"); err != nil {
		return err
	}
	n := count(s, sep)
	if len(args) == 3 {
		if limit, ok := args[2].(int); ok && limit >= 0 && int64(limit) < n {
			n = int64(limit)
		}
	}
	return b.alloc(add(mul(n, 16), 24), "split")
}

func replaceCost(b *budget, args []any) error {
	s, old, repl := str(args, 0), str(args, 1), str(args, 2)
	if err := b.step(fastSteps(int64(len(s))), "replace"); err != nil {
		return err
	}
	n := count(s, old) - 1
	if old == "" {
		n++
	}
	if len(args) == 4 {
		if limit, ok := args[3].(int); ok && limit >= 0 && int64(limit) < n {
			n = int64(limit)
		}
	}
	return b.alloc(add(int64(len(s)), mul(n, int64(len(repl)))), "replace")
}

func repeatCost(b *budget, args []any) error {
	n, ok := args[1].(int)
	if !ok || n < 0 {
		return nil // repeat refuses it
	}
	return b.alloc(mul(int64(len(str(args, 0))), int64(n)), "repeat")
}

func joinCost(b *budget, args []any) error {
	glue := int64(len(str(args, 1)))
	var n, total int64
	switch items := args[0].(type) {
	case []string:
		n = int64(len(items))
		for _, s := range items {
			total = add(total, int64(len(s)))
		}
	case []any:
		n = int64(len(items))
		for _, s := range items {
			if s, ok := s.(string); ok {
				total = add(total, int64(len(s)))
			}
		}
		total = add(total, mul(n, 96)) // a []string, appended to: about six times its size
	}
	if err := b.step(n, "join"); err != nil {
		return err
	}
	return b.alloc(add(total, mul(n, glue)), "join")
}

func searchCost(b *budget, args []any) error {
	return b.step(fastSteps(int64(len(str(args, 0))+len(str(args, 1)))), "search")
}

func aggregateCost(b *budget, args []any) error {
	for _, a := range args {
		if err := b.valueCost(a, "aggregate", 2); err != nil {
			return err
		}
	}
	return nil
}

func medianCost(b *budget, args []any) error {
	var n int64
	for _, a := range args {
		w := walker{b: b, op: "median"}
		before := b.steps
		if _, err := w.walk(a, 0); err != nil {
			return err
		}
		n = add(n, before-b.steps)
	}
	if err := b.step(mul(n, log2(int(min(n, 1<<40)))), "median"); err != nil {
		return err
	}
	return b.alloc(mul(n, 48), "median") // a []float64 appended to
}

func toJSONCost(b *budget, args []any) error {
	w := walker{b: b, op: "toJSON", size: true, indent: true}
	before := b.steps
	n, err := w.walk(args[0], 0)
	if err != nil {
		return err
	}
	// encoding/json's reflection costs about three walks.
	if err := b.step(add(mul(before-b.steps, 2), 20), "toJSON"); err != nil {
		return err
	}
	// MarshalIndent encodes into a growing buffer (unless encoding/json's pool has a big
	// one), copies it, indents into a second one, and expr copies that into a string:
	// up to eleven times the result (measured on escape-heavy strings).
	return b.alloc(mul(n, 12), "toJSON")
}

// fromJSONCost bounds what encoding/json allocates decoding s into any: at most about
// 160 bytes per structural character (a map entry, a slice slot, a boxed number) plus
// three copies of the text.
func fromJSONCost(b *budget, args []any) error {
	s := str(args, 0)
	if err := b.step(20+scanSteps(int64(len(s))), "fromJSON"); err != nil {
		return err
	}
	var structural int64
	inString := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inString {
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
			structural++
		case '{', '[', ',', ':':
			structural++
		}
	}
	return b.alloc(add(mul(structural+1, 160), mul(int64(len(s)), 3)), "fromJSON")
}

func base64Cost(b *budget, args []any) error {
	// A copy of the input, the encoded buffer, and the string made of it.
	n := int64(len(str(args, 0)))
	return b.alloc(add(mul(int64(base64.StdEncoding.EncodedLen(int(min(n, 1<<40)))), 2), n), "base64")
}

func dateCost(b *budget, args []any) error {
	var n int64
	for _, a := range args {
		if s, ok := a.(string); ok {
			n += int64(len(s))
		}
	}
	// Without a layout, date tries seven; with a time zone name, it loads it.
	steps := add(mul(scanSteps(n), 8), 50)
	if len(args) >= 3 {
		steps = add(steps, timezoneSteps)
	}
	return b.step(steps, "date")
}

// timezoneSteps is the price of time.LoadLocation, which reads the time zone database.
const timezoneSteps = 2000

func timezoneCost(b *budget, args []any) error {
	return b.step(timezoneSteps+scanSteps(int64(len(str(args, 0)))), "timezone")
}

func getCost(b *budget, args []any) error {
	if len(args) > 1 {
		return b.step(fastSteps(int64(len(str(args, 1)))), "get")
	}
	return b.step(1, "get")
}

func fromPairsCost(b *budget, args []any) error {
	n, _ := length(args[0])
	if err := b.valueCost(args[0], "fromPairs", 2); err != nil {
		return err
	}
	return b.alloc(add(64, mul(int64(n), 128)), "fromPairs")
}

func copyCost(b *budget, args []any) error {
	n, _ := length(args[0])
	return b.alloc(mul(int64(n), 32), "reverse") // the slice, and boxing
}

func concatCost(b *budget, args []any) error {
	var n int64
	for _, a := range args {
		l, _ := length(a)
		n = add(n, int64(l))
	}
	// Slices appended to allocate about five times their final size (append grows big
	// slices by a quarter), and reflection boxes the elements.
	return b.alloc(mul(n, 112), "concat")
}

func flattenCost(b *budget, args []any) error {
	w := walker{b: b, op: "flatten"}
	before := b.steps
	if _, err := w.walk(args[0], 0); err != nil {
		return err
	}
	return b.alloc(mul(before-b.steps, 112), "flatten") // as concat
}

// The builtins whose implementation is ours, charged as they go.

func boundedSort(b *budget, args []any) (any, error) {
	if len(args) != 1 && len(args) != 2 {
		return nil, fmt.Errorf("invalid number of arguments (expected 1 or 2, got %d)", len(args))
	}
	var array []any
	switch in := args[0].(type) {
	case []any:
		array = make([]any, len(in))
		copy(array, in)
	case []int:
		array = make([]any, len(in))
		for i, v := range in {
			array[i] = v
		}
	case []float64:
		array = make([]any, len(in))
		for i, v := range in {
			array[i] = v
		}
	case []string:
		array = make([]any, len(in))
		for i, v := range in {
			array[i] = v
		}
	}
	if err := b.alloc(mul(int64(len(array)), 24), "sort"); err != nil {
		return nil, err
	}
	var desc bool
	if len(args) == 2 {
		order, ok := args[1].(string)
		if !ok {
			return nil, fmt.Errorf("sort order argument must be a string (got %T)", args[1])
		}
		switch order {
		case "asc":
		case "desc":
			desc = true
		default:
			return nil, fmt.Errorf("invalid order %s, expected asc or desc", order)
		}
	}
	s := &runtime.Sort{Desc: desc, Array: array}
	sort.Sort(chargedSort{s, b})
	return s.Array, nil
}

// boundedUniq keeps the first of equal elements, like expr's uniq (which compares each
// element with every kept one): strings only equal strings, so an array of strings is
// deduplicated with a map; otherwise every comparison is charged.
func boundedUniq(b *budget, args []any) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("invalid number of arguments (expected 1, got %d)", len(args))
	}
	v := reflect.ValueOf(args[0])
	if v.Kind() != reflect.Array && v.Kind() != reflect.Slice {
		return nil, fmt.Errorf("cannot uniq %s", v.Kind())
	}
	size := v.Len()
	if err := b.alloc(mul(int64(size), 192), "uniq"); err != nil {
		return nil, err
	}
	ret := []any{}
	if items, ok := allStrings(v); ok {
		seen := make(map[string]bool, size)
		for _, s := range items {
			if err := b.step(fastSteps(int64(len(s))), "uniq"); err != nil {
				return nil, err
			}
			if !seen[s] {
				seen[s] = true
				ret = append(ret, s)
			}
		}
		return ret, nil
	}
	for i := 0; i < size; i++ {
		item := v.Index(i).Interface()
		dup := false
		for _, r := range ret {
			if err := equalCost(b, item, r, "uniq"); err != nil {
				return nil, err
			}
			if runtime.Equal(item, r) {
				dup = true
				break
			}
		}
		if !dup {
			ret = append(ret, item)
		}
	}
	return ret, nil
}

func allStrings(v reflect.Value) ([]string, bool) {
	switch items := v.Interface().(type) {
	case []string:
		return items, true
	case []any:
		out := make([]string, len(items))
		for i, item := range items {
			s, ok := item.(string)
			if !ok {
				return nil, false
			}
			out[i] = s
		}
		return out, true
	}
	return nil, false
}

// mapCost charges keys, values and toPairs: sorting n keys of total length l.
func mapCost(b *budget, args []any, op string, perEntry int64) error {
	if len(args) != 1 {
		return nil
	}
	m := reflect.ValueOf(args[0])
	if m.Kind() != reflect.Map {
		return nil
	}
	n := int64(m.Len())
	var keyBytes int64
	if sm, ok := args[0].(map[string]any); ok {
		for k := range sm {
			keyBytes += int64(len(k))
		}
	} else if err := b.step(n, op); err != nil {
		return err
	} else {
		keyBytes = mul(n, 64) // fmt.Sprint of other keys
	}
	// Sorting, and reflection on each entry.
	if err := b.step(add(mul(add(n, fastSteps(keyBytes)), log2(int(n))+1), mul(n, 10)), op); err != nil {
		return err
	}
	return b.alloc(mul(n, perEntry), op)
}

// Sorting the keys takes about 130 bytes an entry (measured): the keys, their text, the
// result and boxes; toPairs also makes a pair of each.
func boundedKeys(b *budget, args []any) (any, error) {
	if err := mapCost(b, args, "keys", 144); err != nil {
		return nil, err
	}
	return sortedKeys(args...)
}

func boundedValues(b *budget, args []any) (any, error) {
	if err := mapCost(b, args, "values", 144); err != nil {
		return nil, err
	}
	return sortedValues(args...)
}

func boundedPairs(b *budget, args []any) (any, error) {
	if err := mapCost(b, args, "toPairs", 208); err != nil {
		return nil, err
	}
	return sortedPairs(args...)
}
