package script

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/evanw/esbuild/pkg/api"
	"modernc.org/quickjs"
)

// Limits bound what one run's code may do. They are fixed per worker process (a
// change applies to the runs' next workflow tasks, not to their histories).
type Limits struct {
	// Memory is the most the run's VM may allocate, enforced by the engine at
	// allocation time.
	Memory int64
	// Yield is the most JavaScript time one workflow task of a run may spend (the code
	// between two waits, over all the run's handlers and continuations). It must stay
	// below the Temporal SDK's deadlock detector (1 s).
	Yield time.Duration
}

// DefaultLimits are the limits of RECONCILER_WORKFLOW_CODE_MEMORY_MB and
// RECONCILER_WORKFLOW_CODE_TIMEOUT by default.
var DefaultLimits = Limits{Memory: 32 << 20, Yield: 500 * time.Millisecond}

//go:embed runtime.js
var runtimeJS string

// maxSort bounds TypedArray sorts without a comparator (a native loop the interrupt
// does not reach).
const maxSort = 4 << 20

var (
	preludeOnce sync.Once
	preludeCode []byte
	preludeErr  error
)

// prelude is runtime.js compiled once per process. Compile (which a worker runs
// when it loads a module, outside workflow code) makes it first.
func prelude() ([]byte, error) {
	preludeOnce.Do(func() {
		vm, err := quickjs.NewVM()
		if err != nil {
			preludeErr = err
			return
		}
		defer vm.Close()
		src := strings.TrimSpace(runtimeJS) + "(globalThis.__host);\ndelete globalThis.__host;\n"
		// Whitespace and syntax minified (names kept): a smaller bytecode loads faster
		// in every new run.
		min := api.Transform(src, api.TransformOptions{MinifyWhitespace: true, MinifySyntax: true, Target: api.ESNext, LogLevel: api.LogLevelSilent})
		if len(min.Errors) > 0 {
			preludeErr = fmt.Errorf("minify the workflow runtime: %s", min.Errors[0].Text)
			return
		}
		if preludeCode, err = vm.Compile(string(min.Code), quickjs.EvalGlobal); err != nil {
			preludeErr = fmt.Errorf("compile the workflow runtime: %w", err)
		}
	})
	return preludeCode, preludeErr
}

// limitsJSON is the runtime's answer to host("limits"): the longest array and the
// largest comparator-less TypedArray sort a VM of that memory may run natively.
func limitsJSON(memory int64) string {
	return fmt.Sprintf("[%d,%d]", memory/16, maxSort)
}

// newVM is a VM with the runtime installed and host answering its calls.
func newVM(limits Limits, host quickjs.HostFunc) (*quickjs.VM, error) {
	pre, err := prelude()
	if err != nil {
		return nil, err
	}
	vm, err := quickjs.NewVM()
	if err != nil {
		return nil, fmt.Errorf("create a JavaScript VM: %w", err)
	}
	vm.SetMemoryLimit(uintptr(limits.Memory))
	vm.SetCanBlock(false)
	vm.SetEvalTimeout(limits.Yield)
	bounds := limitsJSON(limits.Memory)
	install := func(args []any) (any, error) {
		if op, _ := args[0].(string); op == "limits" {
			return bounds, nil
		}
		return host(args)
	}
	if err := vm.RegisterHostFunc("__host", install); err != nil {
		vm.Close()
		return nil, fmt.Errorf("install the workflow runtime: %w", err)
	}
	if _, err := vm.EvalBytecode(pre); err != nil {
		vm.Close()
		return nil, fmt.Errorf("install the workflow runtime: %w", err)
	}
	return vm, nil
}

// Program is a compiled module: its bundle as engine bytecode and the export that is
// the workflow.
type Program struct {
	bytecode  []byte
	export    string
	positions *positions // the bundle's source map
	mapSize   int        // bytes of the source map
	Size      int        // bytes of the bundle
}

// compileLimits bound the evaluation of a module's top level when it is checked.
var compileLimits = Limits{Memory: 64 << 20, Yield: 500 * time.Millisecond}

// Compile bundles source and checks that it evaluates and exports a workflow: the
// default export, or else its only exported function.
func Compile(source, language string) (*Program, Problems) {
	if !Is(language) {
		return nil, Problems{{Message: fmt.Sprintf("language %q is not run as a module (typescript or javascript)", language)}}
	}
	js, sourceMap, problems := bundle(source, language)
	if problems != nil {
		return nil, problems
	}
	prog := &Program{Size: len(js), positions: newPositions(sourceMap), mapSize: len(sourceMap)}
	vm, err := newVM(compileLimits, checkHost)
	if err != nil {
		return nil, Problems{{Message: err.Error()}}
	}
	defer vm.Close()
	// The bundle's lines follow bundleLines blank ones, so that its stack frames are
	// told from the runtime's (the engine names both "<eval>").
	bc, err := vm.Compile(strings.Repeat("\n", bundleLines)+js, quickjs.EvalGlobal)
	if err != nil {
		return nil, Problems{prog.problem(err)}
	}
	if _, err := vm.EvalBytecode(bc); err != nil {
		return nil, Problems{prog.problem(err)}
	}
	v, err := vm.Eval("__rt.pick(globalThis."+moduleGlobal+")", quickjs.EvalGlobal)
	if err != nil {
		return nil, Problems{prog.problem(err)}
	}
	export, _ := v.(string)
	switch {
	case export == "":
		return nil, Problems{{Message: "the module exports no workflow: export a default function, or exactly one function"}}
	case strings.HasPrefix(export, "!"):
		return nil, Problems{{Message: "the module exports several functions (" + export[1:] + "): make the workflow the default export"}}
	}
	prog.bytecode, prog.export = bc, export
	return prog, nil
}

// Check reports what is wrong with a module, as the worker would find it: esbuild's
// diagnostics with line and column, imports other than '@temporalio/workflow', a
// top level that throws, no workflow export. Nil means the module would be served.
func Check(source, language string) []Problem {
	_, ps := Compile(source, language)
	return ps
}

// checkHost answers the runtime while a module's top level is checked: no workflow
// runs, so commands are refused and the clock reads zero.
func checkHost(args []any) (any, error) {
	if op, _ := args[0].(string); op == "now" {
		return "0", nil
	}
	return nil, errors.New("workflow APIs cannot be called while the module loads: call them from the workflow function")
}

// Cache keeps compiled programs by compiled_workflows id (rows are immutable), the
// failures too, so that a reload or a replay compiles each version once. It holds at
// most maxBytes of programs (a module may be 1 MiB), evicting arbitrary entries.
type Cache struct {
	mu       sync.Mutex
	maxBytes int
	bytes    int
	items    map[string]cached
}

type cached struct {
	prog     *Program
	problems Problems
	size     int
}

// NewCache keeps at most maxBytes of compiled programs (bytecode and source maps).
func NewCache(maxBytes int) *Cache {
	return &Cache{maxBytes: maxBytes, items: map[string]cached{}}
}

// Get compiles source (its compiled id is id) or returns the earlier result.
func (c *Cache) Get(id, source, language string) (*Program, Problems) {
	if c == nil {
		return Compile(source, language)
	}
	c.mu.Lock()
	it, ok := c.items[id]
	c.mu.Unlock()
	if ok {
		return it.prog, it.problems
	}
	prog, problems := Compile(source, language)
	size := len(source) + 256
	if prog != nil {
		size += len(prog.bytecode) + 2*prog.mapSize
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[id]; ok {
		return prog, problems // compiled meanwhile by another caller
	}
	for k, it := range c.items { // evict arbitrary entries until it fits
		if c.bytes+size <= c.maxBytes {
			break
		}
		delete(c.items, k)
		c.bytes -= it.size
	}
	c.items[id] = cached{prog: prog, problems: problems, size: size}
	c.bytes += size
	return prog, problems
}
