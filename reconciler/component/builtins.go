package component

import (
	"fmt"
	"math"
	"strconv"

	"github.com/dop251/goja"
)

// Caps on the built-ins that allocate or loop in one native step. An interrupt is
// only seen between two instructions of the script, so a native call that allocates
// gigabytes or walks a sparse array of 2^32 elements cannot be stopped once it has
// started: it is refused before it starts, with the RangeError a JavaScript engine
// gives for an allocation it cannot make. What these caps miss (operators such as
// `s += s`, BigInt arithmetic, less common natives) is stopped from outside: the
// sandbox process is killed (pool.go).
//
// The caps are Go functions installed in each fresh runtime (a JavaScript prelude
// doing the same costs about 270 µs per call; these cost a few µs, see the package's
// benchmarks):
//   - ArrayBuffer and every TypedArray constructor charge the bytes they allocate to
//     a budget of Limits.Memory per call, through a Proxy that subclasses, species
//     constructors (slice, map, filter) and `.constructor` all go through;
//   - the generic Array.prototype methods, Array.from, Function.prototype.apply,
//     Reflect.apply and Reflect.construct refuse array-likes longer than Limits.Memory/16
//     elements (what fits densely in the budget);
//   - join, repeat, padStart and padEnd refuse to build strings over
//     Limits.MaxStringBytes; split("") refuses to make more than Memory/64 strings;
//   - TypedArray.prototype.sort without a comparator refuses more than Memory/32
//     elements (its native sort is not interruptible).

// arrayMethods walk this.length elements natively.
var arrayMethods = []string{
	"toString", "toLocaleString", "indexOf", "lastIndexOf", "includes", "fill", "reverse", "slice",
	"splice", "copyWithin", "forEach", "map", "filter", "reduce", "reduceRight", "some", "every",
	"find", "findIndex", "findLast", "findLastIndex", "sort", "flat", "flatMap", "concat", "push",
	"unshift", "toReversed", "toSorted", "toSpliced", "with", "entries", "keys", "values",
}

var typedArrays = []struct {
	name  string
	bytes int64
}{
	{"Int8Array", 1}, {"Uint8Array", 1}, {"Uint8ClampedArray", 1}, {"Int16Array", 2}, {"Uint16Array", 2},
	{"Int32Array", 4}, {"Uint32Array", 4}, {"Float32Array", 4}, {"Float64Array", 8},
	{"BigInt64Array", 8}, {"BigUint64Array", 8},
}

type capper struct {
	vm       *goja.Runtime
	budget   int64 // bytes typed arrays and array buffers may still allocate
	limit    int64
	maxLen   int64
	maxBytes int
}

// limitBuiltins installs the caps in a fresh runtime.
func limitBuiltins(vm *goja.Runtime, lim Limits) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("install limits: %v", r)
		}
	}()
	c := &capper{vm: vm, maxBytes: lim.MaxStringBytes}
	if c.maxBytes > 0 {
		c.stringCaps()
	}
	if lim.Memory <= 0 {
		return nil
	}
	c.limit, c.budget, c.maxLen = lim.Memory, lim.Memory, max(lim.Memory/16, 1<<16)
	c.allocationCaps()
	c.lengthCaps()
	return nil
}

func (c *capper) rangeError(format string, args ...any) {
	e, err := c.vm.New(c.vm.Get("RangeError"), c.vm.ToValue(fmt.Sprintf(format, args...)))
	if err != nil {
		panic(err)
	}
	panic(e)
}

// wrap replaces obj[name] with a function that runs check and then the original.
func (c *capper) wrap(obj *goja.Object, name string, check func(call goja.FunctionCall)) {
	orig, ok := goja.AssertFunction(obj.Get(name))
	if !ok {
		return
	}
	fn := c.vm.ToValue(func(call goja.FunctionCall) goja.Value {
		check(call)
		v, err := orig(call.This, call.Arguments...)
		if err != nil {
			panic(err)
		}
		return v
	}).ToObject(c.vm)
	_ = fn.DefineDataProperty("name", c.vm.ToValue(name), goja.FLAG_FALSE, goja.FLAG_TRUE, goja.FLAG_FALSE)
	if err := obj.DefineDataProperty(name, fn, goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE); err != nil {
		panic(err)
	}
}

// length is ToLength(v) as a float, so that 40e9 stays 40e9.
func length(v goja.Value) float64 {
	if v == nil {
		return 0
	}
	f := v.ToFloat()
	if math.IsNaN(f) || f <= 0 {
		return 0
	}
	return math.Floor(f)
}

// lengthOf is the length property of an array-like (0 for what is not an object).
func (c *capper) lengthOf(v goja.Value) float64 {
	if v == nil || goja.IsUndefined(v) || goja.IsNull(v) {
		return 0
	}
	obj, ok := v.(*goja.Object)
	if !ok {
		return 0
	}
	return length(obj.Get("length"))
}

func (c *capper) checkLength(what string, n float64) {
	if n > float64(c.maxLen) {
		c.rangeError("%s on %.0f elements: a component may walk at most %d in one call", what, n, c.maxLen)
	}
}

func (c *capper) charge(what string, bytes float64) {
	if bytes > float64(c.budget) {
		c.rangeError("%s would allocate %.0f bytes: a component call may allocate at most %d MiB of typed arrays", what, bytes, c.limit>>20)
	}
	c.budget -= int64(bytes)
}

// allocationCaps puts ArrayBuffer and the typed array constructors behind proxies that
// charge the budget.
func (c *capper) allocationCaps() {
	c.proxy("ArrayBuffer", func(args []goja.Value) float64 {
		if len(args) == 0 {
			return 0
		}
		return length(args[0])
	})
	for _, ta := range typedArrays {
		per := float64(ta.bytes)
		c.proxy(ta.name, func(args []goja.Value) float64 {
			if len(args) == 0 {
				return 0
			}
			if obj, ok := args[0].(*goja.Object); ok {
				return c.lengthOf(obj) * per // an ArrayBuffer has no length: a view allocates nothing
			}
			return length(args[0]) * per
		})
	}
	u8, ok := c.vm.Get("Uint8Array").ToObject(c.vm).Get("prototype").(*goja.Object)
	if !ok || u8.Prototype() == nil {
		return
	}
	proto := u8.Prototype() // %TypedArray%.prototype
	c.wrap(proto, "sort", func(call goja.FunctionCall) {
		if len(call.Arguments) > 0 && !goja.IsUndefined(call.Arguments[0]) {
			return // a comparator is JavaScript: interruptible
		}
		if n := c.lengthOf(call.This); n > float64(c.maxLen/2) {
			c.rangeError("TypedArray.prototype.sort without a comparator on %.0f elements: at most %d in one call", n, c.maxLen/2)
		}
	})
}

func (c *capper) proxy(name string, bytes func(args []goja.Value) float64) {
	ctor, ok := c.vm.Get(name).(*goja.Object)
	if !ok {
		return
	}
	construct, ok := goja.AssertConstructor(ctor)
	if !ok {
		return
	}
	p := c.vm.NewProxy(ctor, &goja.ProxyTrapConfig{
		Construct: func(_ *goja.Object, args []goja.Value, newTarget *goja.Object) *goja.Object {
			c.charge(name, bytes(args))
			o, err := construct(newTarget, args...)
			if err != nil {
				panic(err)
			}
			return o
		},
	})
	// goja's proxies of functions do not implement instanceof (TypeError "Expecting
	// a function in instanceof check"): give the constructor an ordinary one, which
	// the proxy and subclasses inherit.
	if err := ctor.DefineDataPropertySymbol(goja.SymHasInstance, c.vm.ToValue(c.hasInstance), goja.FLAG_FALSE, goja.FLAG_FALSE, goja.FLAG_FALSE); err != nil {
		panic(err)
	}
	pv := c.vm.ToValue(p)
	if proto, ok := ctor.Get("prototype").(*goja.Object); ok {
		if err := proto.DefineDataProperty("constructor", pv, goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE); err != nil {
			panic(err)
		}
	}
	if err := c.vm.GlobalObject().DefineDataProperty(name, pv, goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE); err != nil {
		panic(err)
	}
}

// hasInstance is OrdinaryHasInstance(this, v).
func (c *capper) hasInstance(call goja.FunctionCall) goja.Value {
	ctor, ok := call.This.(*goja.Object)
	v, isObject := call.Argument(0).(*goja.Object)
	if !ok || !isObject {
		return c.vm.ToValue(false)
	}
	proto, ok := ctor.Get("prototype").(*goja.Object)
	if !ok {
		panic(c.vm.NewTypeError("Function has non-object prototype in instanceof check"))
	}
	for p := v.Prototype(); p != nil; p = p.Prototype() {
		if p.SameAs(proto) {
			return c.vm.ToValue(true)
		}
	}
	return c.vm.ToValue(false)
}

// lengthCaps bounds the natives that walk an array-like's length.
func (c *capper) lengthCaps() {
	vm := c.vm
	array := vm.Get("Array").ToObject(vm)
	proto := array.Get("prototype").ToObject(vm)
	for _, name := range arrayMethods {
		what := "Array.prototype." + name
		c.wrap(proto, name, func(call goja.FunctionCall) {
			c.checkLength(what, c.lengthOf(call.This))
			if name == "concat" {
				n := c.lengthOf(call.This)
				for _, a := range call.Arguments {
					n += c.lengthOf(a)
				}
				c.checkLength(what, n)
			}
		})
	}
	c.wrap(proto, "join", func(call goja.FunctionCall) { c.checkJoin(call) })
	c.wrap(array, "from", func(call goja.FunctionCall) {
		if len(call.Arguments) == 0 {
			return
		}
		if obj, ok := call.Arguments[0].(*goja.Object); ok {
			if it := obj.GetSymbol(goja.SymIterator); it == nil || goja.IsUndefined(it) {
				c.checkLength("Array.from", c.lengthOf(obj))
			}
		}
	})
	c.wrap(vm.Get("Function").ToObject(vm).Get("prototype").ToObject(vm), "apply", func(call goja.FunctionCall) {
		if len(call.Arguments) > 1 {
			c.checkLength("Function.prototype.apply", c.lengthOf(call.Arguments[1]))
		}
	})
	reflect := vm.Get("Reflect").ToObject(vm)
	c.wrap(reflect, "apply", func(call goja.FunctionCall) {
		if len(call.Arguments) > 2 {
			c.checkLength("Reflect.apply", c.lengthOf(call.Arguments[2]))
		}
	})
	c.wrap(reflect, "construct", func(call goja.FunctionCall) {
		if len(call.Arguments) > 1 {
			c.checkLength("Reflect.construct", c.lengthOf(call.Arguments[1]))
		}
	})
	c.wrap(vm.Get("String").ToObject(vm).Get("prototype").ToObject(vm), "split", func(call goja.FunctionCall) {
		if len(call.Arguments) == 0 || len(call.Arguments) > 1 && !goja.IsUndefined(call.Arguments[1]) {
			return // split(sep, limit) is bounded by its limit
		}
		if s, ok := call.Arguments[0].(goja.String); !ok || s.Length() != 0 {
			return
		}
		if n := call.This.ToString().(goja.String).Length(); int64(n) > c.maxLen/4 {
			c.rangeError("String.prototype.split(\"\") on %d characters: at most %d strings in one call", n, c.maxLen/4)
		}
	})
}

// checkJoin refuses a join whose result would pass MaxStringBytes, counting the
// separators and the string elements (other elements are converted by the original).
func (c *capper) checkJoin(call goja.FunctionCall) {
	obj, ok := call.This.(*goja.Object)
	if !ok {
		return
	}
	n := c.lengthOf(obj)
	c.checkLength("Array.prototype.join", n)
	if c.maxBytes <= 0 || n == 0 {
		return
	}
	sep := 1
	if len(call.Arguments) > 0 && !goja.IsUndefined(call.Arguments[0]) {
		sep = call.Arguments[0].ToString().(goja.String).Length()
	}
	total := float64(sep) * (n - 1)
	for i := int64(0); i < int64(n) && total <= float64(c.maxBytes); i++ {
		if s, ok := obj.Get(strconv.FormatInt(i, 10)).(goja.String); ok {
			total += float64(s.Length())
		}
	}
	if total > float64(c.maxBytes) {
		c.rangeError("Array.prototype.join would build a string over %d MiB", c.maxBytes>>20)
	}
}

// stringCaps refuses repeat, padStart and padEnd beyond MaxStringBytes.
func (c *capper) stringCaps() {
	proto := c.vm.Get("String").ToObject(c.vm).Get("prototype").ToObject(c.vm)
	for _, name := range []string{"repeat", "padStart", "padEnd"} {
		c.wrap(proto, name, func(call goja.FunctionCall) {
			if len(call.Arguments) == 0 {
				return
			}
			n := call.Arguments[0].ToFloat()
			want := n
			if name == "repeat" {
				want = float64(call.This.ToString().(goja.String).Length()) * n
			}
			if want > float64(c.maxBytes) {
				c.rangeError("String.prototype.%s would build a string over %d MiB", name, c.maxBytes>>20)
			}
		})
	}
}
