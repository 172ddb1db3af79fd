package script

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/evanw/esbuild/pkg/api"

	"github.com/flowbuilder/reconciler/internal/isolate"
)

// esbuild parses tenant code recursively: a module that nests deeply enough ends the
// process with a stack overflow, which no recover catches. Tenant code is therefore
// bundled and transpiled in an isolate child (see internal/isolate): such a module is a
// compile problem, not a crash of the service.
func init() {
	isolate.Register(jobBundle, func(in []byte) ([]byte, error) {
		var req bundleRequest
		if err := json.Unmarshal(in, &req); err != nil {
			return nil, err
		}
		var res bundleResult
		res.JS, res.SourceMap, res.Problems = bundleHere(req.Source, req.Language)
		return json.Marshal(res)
	})
	isolate.Register(jobTranspile, func(in []byte) ([]byte, error) {
		var res bundleResult
		res.JS, res.Problems = transpileHere(string(in))
		return json.Marshal(res)
	})
}

const (
	jobBundle    = "script.bundle"
	jobTranspile = "script.transpile"
)

type bundleRequest struct {
	Source   string `json:"source"`
	Language string `json:"language"`
}

type bundleResult struct {
	JS        string   `json:"js"`
	SourceMap []byte   `json:"source_map,omitempty"`
	Problems  Problems `json:"problems,omitempty"`
}

// isolated runs job in an isolate child and decodes its result; a child that died
// (the code nests too deeply for the parser) is the module's problem.
func isolated(job string, in []byte) (bundleResult, Problems) {
	out, err := isolate.Call(context.Background(), job, in)
	if errors.Is(err, isolate.ErrTooDeep) {
		return bundleResult{}, Problems{{Message: "the code nests too deeply to compile (brackets, operators or functions nested tens of thousands deep: the compiler ran out of stack)"}}
	}
	if err != nil {
		return bundleResult{}, Problems{{Message: "the code could not be compiled: " + err.Error()}}
	}
	var res bundleResult
	if err := json.Unmarshal(out, &res); err != nil {
		return bundleResult{}, Problems{{Message: "the code could not be compiled: " + err.Error()}}
	}
	return res, res.Problems
}

// Languages of compiled_workflows.language that this package runs.
const (
	TypeScript = "typescript"
	JavaScript = "javascript"
)

// Is reports whether language is run by this package (rather than the JSON interpreter).
func Is(language string) bool { return language == TypeScript || language == JavaScript }

// ModuleName is the only import workflow code may have.
const ModuleName = "@temporalio/workflow"

// Exports are the names '@temporalio/workflow' provides: runtime.js defines them, the
// shim lets a module import exactly these, and types/ declares them (tests keep the
// three equal).
var Exports = []string{
	"proxyActivities", "proxyLocalActivities", "sleep", "condition", "defineSignal", "defineQuery", "defineUpdate",
	"setHandler", "executeChild", "startChild", "continueAsNew", "workflowInfo", "uuid4", "patched", "deprecatePatch",
	"CancellationScope", "isCancellation", "log", "ApplicationFailure", "ActivityFailure", "ChildWorkflowFailure",
	"CancelledFailure", "TemporalFailure", "TimeoutFailure", "TerminatedFailure", "ServerFailure",
}

// Problem is one thing wrong with a module, where the builder can show it: Line and
// Column are 1-based positions in the source (0 when the problem has no position, such
// as a missing workflow export).
type Problem struct {
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Line == 0 {
		return p.Message
	}
	return fmt.Sprintf("%d:%d: %s", p.Line, p.Column, p.Message)
}

// Problems is a module's problems as one error.
type Problems []Problem

func (ps Problems) Error() string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// moduleGlobal is the global the bundle assigns its exports to.
const moduleGlobal = "__workflow_module"

// shim is what '@temporalio/workflow' resolves to in a bundle: the API object the
// runtime installed, re-exported name by name so that importing anything else is a
// compile error at the import.
var shim = func() string {
	var b strings.Builder
	b.WriteString("const w = globalThis.__temporal_workflow;\n")
	for _, name := range Exports {
		fmt.Fprintf(&b, "export const %s = w.%s;\n", name, name)
	}
	return b.String()
}()

// bundle transpiles and bundles a module with esbuild into one script that assigns
// the module's exports to moduleGlobal. Async functions are lowered to generators so
// that the runtime can carry the cancellation scope across awaits.
func bundle(source, language string) (js string, sourceMap []byte, _ Problems) {
	in, _ := json.Marshal(bundleRequest{Source: source, Language: language})
	res, problems := isolated(jobBundle, in)
	if problems != nil {
		return "", nil, problems
	}
	return res.JS, res.SourceMap, nil
}

// bundleHere is bundle in this process (the isolate child).
func bundleHere(source, language string) (js string, sourceMap []byte, _ Problems) {
	loader := api.LoaderTS
	file := "workflow.ts"
	if language == JavaScript {
		loader, file = api.LoaderJS, "workflow.js"
	}
	res := api.Build(api.BuildOptions{
		Stdin:      &api.StdinOptions{Contents: source, Loader: loader, Sourcefile: file},
		Bundle:     true,
		Write:      false,
		Format:     api.FormatIIFE,
		GlobalName: moduleGlobal,
		Platform:   api.PlatformNeutral,
		Target:     api.ESNext,
		Supported:  map[string]bool{"async-await": false, "async-generator": false, "for-await": false, "top-level-await": false, "bigint": false},
		LogLevel:   api.LogLevelSilent,
		Charset:    api.CharsetUTF8,
		Plugins:    []api.Plugin{importsPlugin},
		Outfile:    "workflow.js",
		Sourcemap:  api.SourceMapExternal,
		// The map names the sources; their text is the compiled row's own.
		SourcesContent: api.SourcesContentExclude,
	})
	if len(res.Errors) > 0 {
		return "", nil, messages(res.Errors)
	}
	for _, f := range res.OutputFiles {
		switch {
		case strings.HasSuffix(f.Path, ".js.map"):
			sourceMap = f.Contents
		case strings.HasSuffix(f.Path, ".js"):
			js = string(f.Contents)
		}
	}
	if js == "" {
		return "", nil, Problems{{Message: "esbuild produced no output"}}
	}
	return js, sourceMap, nil
}

// importsPlugin resolves '@temporalio/workflow' to the shim and refuses every other
// import, naming it.
var importsPlugin = api.Plugin{
	Name: "imports",
	Setup: func(b api.PluginBuild) {
		b.OnResolve(api.OnResolveOptions{Filter: ".*"}, func(args api.OnResolveArgs) (api.OnResolveResult, error) {
			if args.Kind == api.ResolveEntryPoint {
				return api.OnResolveResult{}, nil
			}
			if args.Path == ModuleName {
				return api.OnResolveResult{Path: "workflow", Namespace: "temporal"}, nil
			}
			return api.OnResolveResult{Errors: []api.Message{{
				Text: fmt.Sprintf("import %q is not allowed: workflow code may import only '%s'", args.Path, ModuleName),
			}}}, nil
		})
		b.OnLoad(api.OnLoadOptions{Filter: ".*", Namespace: "temporal"}, func(api.OnLoadArgs) (api.OnLoadResult, error) {
			return api.OnLoadResult{Contents: &shim, Loader: api.LoaderJS}, nil
		})
	},
}

// messages turns esbuild's diagnostics into problems (esbuild's columns are 0-based).
func messages(ms []api.Message) Problems {
	var ps Problems
	for _, m := range ms {
		p := Problem{Message: m.Text}
		if m.Location != nil && m.Location.Namespace != "temporal" {
			p.Line, p.Column = m.Location.Line, m.Location.Column+1
		}
		ps = append(ps, p)
	}
	return ps
}

// TranspileComponent turns a TypeScript component into the JavaScript the component
// runner takes: types are erased, nothing is bundled or renamed, so the function the
// component defines keeps its name.
func TranspileComponent(source string) (string, Problems) {
	res, problems := isolated(jobTranspile, []byte(source))
	if problems != nil {
		return "", problems
	}
	return res.JS, nil
}

// transpileHere is TranspileComponent in this process (the isolate child).
func transpileHere(source string) (string, Problems) {
	res := api.Transform(source, api.TransformOptions{
		Loader:     api.LoaderTS,
		Sourcefile: "component.ts",
		Target:     api.ES2020,
		Charset:    api.CharsetUTF8,
		LogLevel:   api.LogLevelSilent,
	})
	if len(res.Errors) > 0 {
		return "", messages(res.Errors)
	}
	return string(res.Code), nil
}
