package reconciler

import (
	"fmt"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/flowbuilder/reconciler/reconciler/script"
)

// TypeScript and JavaScript workflow code (SPEC 4b) in a project's worker: runs of
// compiled versions whose language is typescript or javascript are handed to package
// script, with the program of the pinned version. Its activities (local ones too) come
// back through the dynamic activity, so built-ins and components work as for JSON.

// runScript runs a pinned TypeScript or JavaScript version.
func (pw *projectWorker) runScript(ctx workflow.Context, name string, pin pinned, args converter.EncodedValues) (any, error) {
	var prog *script.Program
	for _, sw := range pw.served.Load().workflows {
		if sw.compiledID.String() == pin.CompiledID && sw.program != nil {
			prog = sw.program
			break
		}
	}
	if prog == nil {
		var problems script.Problems
		if prog, problems = pw.shared.scripts.Get(pin.CompiledID, pin.Code, pin.Language); problems != nil {
			return nil, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("workflow %s version %d cannot be loaded: %s", name, pin.Version, problems), "InvalidDefinition", nil)
		}
	}
	return script.Execute(ctx, prog, args, script.Options{Limits: pw.shared.cfg.scriptLimits(), Warm: pw.shared.warm})
}

// transpileComponent turns a TypeScript component into the JavaScript the component
// runner takes; a compile error names its line and column.
func transpileComponent(code string) (string, error) {
	js, problems := script.TranspileComponent(code)
	if problems != nil {
		return "", fmt.Errorf("TypeScript: %w", problems)
	}
	return js, nil
}
