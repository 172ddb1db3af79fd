// Package script runs workflow code written in TypeScript or JavaScript against
// Temporal's '@temporalio/workflow' API (SPEC 4b) inside the Temporal Go SDK, with no
// Node.js.
//
// # Compile (bundle.go, program.go)
//
//	source ──esbuild (Go API)──> one IIFE bundle ──QuickJS──> bytecode + the export
//	          '@temporalio/workflow' → the runtime's exports; any other import: an error
//
// Compile also evaluates the module's top level once, so that a module that throws
// there or exports no workflow is reported like a syntax error (Problems, with line
// and column where esbuild gives them). Cache keeps programs by compiled id.
//
// # Run (run.go, runtime.js)
//
// Each run gets its own VM with runtime.js installed (the API, written in JavaScript
// on one host function) and the program's bytecode. Every API call that is a Temporal
// command — activity, local activity, timer, child, signal to a child — becomes a
// promise; the Go side issues the command and a workflow coroutine settles the
// promise from the SDK's future, then drains the job queue and re-evaluates blocked
// conditions, in the SDK's deterministic coroutine order. Signals are read from their
// channels, queries and updates registered with the SDK when the code sets a handler.
// Cancellation is driven from JavaScript as in the TypeScript SDK: a scope's
// cancellation cancels the commands it owns; cancelling the run cancels the root
// scope. Date is workflow time, Math.random and uuid4 are seeded from a SideEffect.
//
// # Limits
//
// The VM's memory is capped at allocation time (Limits.Memory) and its JavaScript
// time per workflow task (Limits.Yield, below the SDK's 1 s deadlock detector) by an
// interrupt. Reaching either panics with a LimitError on the workflow coroutine: the
// SDK fails the workflow task, drops the run from its cache (closing the VM), and
// Temporal retries the task. Native loops the interrupt cannot reach (over huge
// sparse arrays) are refused up front by the runtime.
//
// Why QuickJS (modernc.org/quickjs, pure Go) and not goja: goja cannot cap one
// runtime's memory, so one tenant's allocation could end the process.
package script
