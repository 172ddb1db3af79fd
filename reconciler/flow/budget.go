package flow

import (
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"
)

// Limits bound one evaluation: a template with all of its ${...}, or one condition.
// See bound.go for why they hold for every expression a tenant can write.
type Limits struct {
	// Steps is the work an evaluation may do. A step is roughly one expression node
	// evaluated for one element of a loop, one element of a value visited, 64 bytes
	// compared or hashed, 16 bytes scanned, or one regular expression instruction run
	// over one byte: 2 to 25 ns measured (TestWorstCases). Default 1,000,000, at most
	// about 25 ms.
	Steps int64
	// Bytes is what an evaluation may allocate for the strings, arrays and maps it
	// builds, counted before each allocation and never given back. Default 8 MiB.
	Bytes int64
	// Output is the largest result, in bytes of JSON (Temporal refuses payloads over
	// 2 MB). Default 2 MiB.
	Output int64
	// Depth is the deepest nesting of a value an evaluation may walk (it bounds the Go
	// stack of encoding/json, fmt and reflect.DeepEqual on it). Default 1000.
	Depth int
	// RegexpInsts is the largest regular expression, in compiled instructions, for
	// `matches` (constant patterns are checked when the definition is parsed).
	// Default 10,000.
	RegexpInsts int64
}

// DefaultLimits are the limits of an evaluation when Options leave them zero.
var DefaultLimits = Limits{
	Steps:       1_000_000,
	Bytes:       8 << 20,
	Output:      2 << 20,
	Depth:       1000,
	RegexpInsts: 10_000,
}

// withDefaults fills the zero fields of l from DefaultLimits.
func (l Limits) withDefaults() Limits {
	if l.Steps <= 0 {
		l.Steps = DefaultLimits.Steps
	}
	if l.Bytes <= 0 {
		l.Bytes = DefaultLimits.Bytes
	}
	if l.Output <= 0 {
		l.Output = DefaultLimits.Output
	}
	if l.Depth <= 0 {
		l.Depth = DefaultLimits.Depth
	}
	if l.RegexpInsts <= 0 {
		l.RegexpInsts = DefaultLimits.RegexpInsts
	}
	return l
}

// LimitError says which limit an evaluation reached, and doing what.
type LimitError struct {
	Limit string // "work", "memory", "output", "depth" or "regexp"
	Max   int64
	Op    string // what was being done when the limit was reached
	Need  int64  // for memory and output: the size asked for
}

func (e *LimitError) Error() string {
	switch e.Limit {
	case "work":
		return fmt.Sprintf("%s: exceeds the expression work limit (%d steps per evaluation)", e.Op, e.Max)
	case "memory":
		return fmt.Sprintf("%s: allocating %d more bytes exceeds the expression memory limit (%d bytes per evaluation)", e.Op, e.Need, e.Max)
	case "output":
		return fmt.Sprintf("%s: the result exceeds the expression output limit (%d bytes of JSON)", e.Op, e.Max)
	case "depth":
		return fmt.Sprintf("%s: value nested deeper than the expression depth limit (%d levels)", e.Op, e.Max)
	case "regexp":
		return fmt.Sprintf("%s: regular expression of %d instructions exceeds the limit (%d)", e.Op, e.Need, e.Max)
	}
	return fmt.Sprintf("%s: expression %s limit (%d) exceeded", e.Op, e.Limit, e.Max)
}

// budget is what is left of one evaluation's limits. It is used by one goroutine.
type budget struct {
	steps int64 // left
	bytes int64 // left
	out   int64 // left
	lim   Limits
}

func newBudget(l Limits) *budget {
	l = l.withDefaults()
	return &budget{steps: l.Steps, bytes: l.Bytes, out: l.Output, lim: l}
}

// used is how many steps were spent (the overdrawing charge counts as one).
func (b *budget) used() int64 {
	if b.steps < 0 {
		return b.lim.Steps + 1
	}
	return b.lim.Steps - b.steps
}

// step spends n steps.
func (b *budget) step(n int64, op string) error {
	b.steps -= n
	if b.steps < 0 || n < 0 {
		b.steps = -1
		return &LimitError{Limit: "work", Max: b.lim.Steps, Op: op}
	}
	return nil
}

// alloc spends n bytes, and the steps to fill them.
func (b *budget) alloc(n int64, op string) error {
	if n < 0 || n > b.bytes {
		need := n
		if n < 0 {
			need = math.MaxInt64
		}
		b.bytes = -1
		return &LimitError{Limit: "memory", Max: b.lim.Bytes, Op: op, Need: need}
	}
	b.bytes -= n
	return b.step(scanSteps(n), op)
}

// output spends n bytes of the result.
func (b *budget) output(n int64, op string) error {
	if n < 0 || n > b.out {
		b.out = -1
		return &LimitError{Limit: "output", Max: b.lim.Output, Op: op, Need: n}
	}
	b.out -= n
	return nil
}

// Steps for work over n bytes: fastSteps for memcmp, hashing, searching and copying;
// scanSteps for byte-by-byte loops (escaping, case mapping, parsing, formatting).
func fastSteps(n int64) int64 { return n/64 + 1 }
func scanSteps(n int64) int64 { return n/16 + 1 }

// mul and add saturate at MaxInt64 (every size here is >= 0).
func mul(a, b int64) int64 {
	if a < 0 || b < 0 {
		return math.MaxInt64
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(lo)
}

func add(a, b int64) int64 {
	if a < 0 || b < 0 || a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func log2(n int) int64 { return int64(bits.Len(uint(n))) }

// walker visits a value depth first (as a tree: a value shared twice is visited twice),
// charging a step per value and per 64 bytes of string. In size mode it also returns
// the length of the value's JSON encoding: exact for the JSON types, an upper bound for
// the others; with indent, of json.MarshalIndent(v, "", "  "). Maps are walked in Go's
// random order: whether a walk exceeds a limit does not depend on it, but which limit
// it reports first (work or depth) can, when both are exceeded.
type walker struct {
	b      *budget
	op     string
	size   bool
	indent bool
}

func (w *walker) walk(v any, depth int) (int64, error) {
	if depth > w.b.lim.Depth {
		return 0, &LimitError{Limit: "depth", Max: int64(w.b.lim.Depth), Op: w.op}
	}
	if err := w.b.step(1, w.op); err != nil {
		return 0, err
	}
	switch v := v.(type) {
	case nil:
		return 4, nil
	case bool:
		return 5, nil
	case string:
		return w.str(v)
	case float64:
		return floatLen(v), nil
	case int:
		return intLen(int64(v)), nil
	case int64:
		return intLen(v), nil
	case []any:
		return w.list(len(v), depth, func(i int) any { return v[i] })
	case map[string]any:
		var n int64 = 2
		if w.size && len(v) > 1 {
			// encoding/json sorts the keys.
			if err := w.b.step(mul(int64(len(v)), log2(len(v))), w.op); err != nil {
				return 0, err
			}
		}
		for k, item := range v {
			kn, err := w.str(k)
			if err != nil {
				return 0, err
			}
			vn, err := w.walk(item, depth+1)
			if err != nil {
				return 0, err
			}
			n = add(n, add(kn, vn+2))
			if w.indent {
				n = add(n, int64(2*depth+4))
			}
		}
		if w.indent {
			n = add(n, int64(2*depth+1))
		}
		return n, nil
	case []int:
		if err := w.b.step(int64(len(v)), w.op); err != nil {
			return 0, err
		}
		return w.flat(len(v), depth, 21), nil
	case []float64:
		if err := w.b.step(int64(len(v)), w.op); err != nil {
			return 0, err
		}
		return w.flat(len(v), depth, 25), nil
	case []string:
		return w.list(len(v), depth, func(i int) any { return v[i] })
	case time.Time:
		return 40, nil
	case time.Duration:
		return 21, nil
	case *time.Location:
		return 2, nil
	case Scope:
		return w.list(5, depth, func(i int) any { return [...]any{v.Input, v.Nodes, v.Signals, v.Workflow, v.Loop}[i] })
	}
	return w.reflect(reflect.ValueOf(v), depth)
}

func (w *walker) str(s string) (int64, error) {
	if !w.size {
		return 0, w.b.step(fastSteps(int64(len(s))), w.op)
	}
	if err := w.b.step(scanSteps(int64(len(s))), w.op); err != nil {
		return 0, err
	}
	return jsonStringLen(s), nil
}

func (w *walker) list(n, depth int, item func(int) any) (int64, error) {
	var size int64 = 2
	for i := 0; i < n; i++ {
		vn, err := w.walk(item(i), depth+1)
		if err != nil {
			return 0, err
		}
		size = add(size, vn+1)
		if w.indent {
			size = add(size, int64(2*depth+3))
		}
	}
	if w.indent {
		size = add(size, int64(2*depth+1))
	}
	return size, nil
}

// flat is the size of n scalars of at most each bytes.
func (w *walker) flat(n, depth int, each int64) int64 {
	per := each + 1
	if w.indent {
		per += int64(2*depth + 3)
	}
	return add(mul(int64(n), per), int64(2*depth+3))
}

func (w *walker) reflect(rv reflect.Value, depth int) (int64, error) {
	switch rv.Kind() {
	case reflect.Invalid:
		return 4, nil
	case reflect.Bool:
		return 5, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return 25, nil
	case reflect.String:
		return w.str(rv.String())
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
			// []byte is base64 in JSON.
			n := int64(rv.Len())
			if err := w.b.step(scanSteps(n), w.op); err != nil {
				return 0, err
			}
			return n/3*4 + 6, nil
		}
		return w.list(rv.Len(), depth, func(i int) any { return rv.Index(i).Interface() })
	case reflect.Map:
		var n int64 = 2
		it := rv.MapRange()
		for it.Next() {
			kn, err := w.walk(it.Key().Interface(), depth+1)
			if err != nil {
				return 0, err
			}
			vn, err := w.walk(it.Value().Interface(), depth+1)
			if err != nil {
				return 0, err
			}
			n = add(n, add(kn+2, vn+2))
			if w.indent {
				n = add(n, int64(2*depth+4))
			}
		}
		return n, nil
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return 4, nil
		}
		return w.reflect(rv.Elem(), depth+1)
	case reflect.Struct:
		var n int64 = 2
		t := rv.Type()
		for i := 0; i < rv.NumField(); i++ {
			if !t.Field(i).IsExported() {
				continue
			}
			vn, err := w.walk(rv.Field(i).Interface(), depth+1)
			if err != nil {
				return 0, err
			}
			n = add(n, add(int64(len(t.Field(i).Name))+4, vn))
		}
		return n, nil
	}
	return 32, nil
}

// jsonStringLen is the length of s encoded by encoding/json (with HTML escaping), or a
// little more.
func jsonStringLen(s string) int64 {
	n := int64(2)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += int64(size)
		}
		i += size
	}
	return n
}

func floatLen(f float64) int64 {
	var buf [32]byte
	return int64(len(strconv.AppendFloat(buf[:0], f, 'g', -1, 64))) + 1
}

func intLen(i int64) int64 {
	var buf [24]byte
	return int64(len(strconv.AppendInt(buf[:0], i, 10)))
}

// valueCost charges factor walks of v: the price of an operation whose work is at most
// proportional to v's size, like comparing it (reflect.DeepEqual, encoding/json and
// fmt spend up to three times what the walk does on each value).
func (b *budget) valueCost(v any, op string, factor int64) error {
	w := walker{b: b, op: op}
	before := b.steps
	if _, err := w.walk(v, 0); err != nil {
		return err
	}
	return b.step(mul(before-b.steps, factor-1), op)
}

// jsonSize charges a walk of v and returns the length of its JSON encoding.
func (b *budget) jsonSize(v any, op string) (int64, error) {
	w := walker{b: b, op: op, size: true}
	return w.walk(v, 0)
}
