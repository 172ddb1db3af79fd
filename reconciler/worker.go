package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler/component"
	"github.com/flowbuilder/reconciler/reconciler/egress"
	"github.com/flowbuilder/reconciler/reconciler/flow"
	"github.com/flowbuilder/reconciler/reconciler/script"
)

// projectWorker is one Temporal worker serving one project. What it serves lives in an
// atomically swapped set, so a reload changes the definitions without touching the
// pollers; only a change of task queue or worker options needs a new projectWorker.
type projectWorker struct {
	project   uuid.UUID
	id        string // workflow_workers.worker_id, also the Temporal worker identity
	taskQueue string
	options   workerOptions    // as the project asked: a change of them restarts the worker
	effective effectiveOptions // what it got within the operator's limits
	startedAt time.Time
	log       *slog.Logger
	shared    *shared

	w      worker.Worker
	served atomic.Pointer[servedSet]

	stopOnce sync.Once

	generation atomic.Int64 // served now: set by reloads, read by health checks and rows
	replace    atomic.Bool  // its polls failed through a Temporal outage that is over: replace it

	// Set before the worker is published, then read only.
	startGeneration int64 // when the worker was started; reloads keep it
	leaseTerm       int64 // the project lease's term it runs under

	// Poll health as last reported in the row, owned by the health check.
	pollMu    sync.Mutex
	pollError string
	pollSince time.Time
}

// pollProblem is the poll error shown in the worker's row, if any.
func (pw *projectWorker) pollProblem() (string, time.Time) {
	pw.pollMu.Lock()
	defer pw.pollMu.Unlock()
	return pw.pollError, pw.pollSince
}

// setPollProblem records a poll error ("" when polls work again) and reports whether
// that changes what the row says.
func (pw *projectWorker) setPollProblem(msg string, since time.Time) bool {
	pw.pollMu.Lock()
	defer pw.pollMu.Unlock()
	if pw.pollError == msg {
		return false
	}
	pw.pollError, pw.pollSince = msg, since
	return true
}

// shared is what every project's worker uses: one Temporal client, the pinned
// definition cache, the guarded HTTP client and the component limits. None of it
// carries state from one project to another.
type shared struct {
	temporal   client.Client
	cfg        Config
	defs       *definitionCache
	scripts    *script.Cache // compiled TypeScript / JavaScript modules by compiled id
	warm       *script.Warm  // their runs' VMs, made ahead of need
	http       *egress.Client
	components *component.Pool                // where component calls run
	search     *searchIndex                   // which search attributes runs set (nil: none)
	compiled   atomic.Pointer[CompiledLoader] // see SetCompiledLoader
}

// pinned is recorded in a run's history (a SideEffect) when it starts: the run uses
// this definition until it ends, whatever is compiled or served later.
type pinned struct {
	CompiledID string `json:"compiled_id"`
	Version    int32  `json:"version"`
	Code       string `json:"code"`
	MaxSteps   int    `json:"max_steps"`
	// Without a compiled id: why the workflow is not served, and whether the run has
	// waited past the grace period (it then fails with WorkflowNotServed). Recorded, so
	// that a replay decides the same whatever the configuration is then.
	NotServed string `json:"not_served,omitempty"`
	GaveUp    bool   `json:"gave_up,omitempty"`
	// Search is what the run upserts as search attributes, decided when it starts
	// (the namespace has them); absent from runs started before the service set any.
	Search   *pinnedSearch `json:"search,omitempty"`
	Language string        `json:"language,omitempty"` // "" is json
}

// failureNotServed is the failure type of a run whose workflow was not served within
// the grace period.
const failureNotServed = "WorkflowNotServed"

// notServedMarker starts the panic message of a workflow task failed because its
// workflow is not served (see temporal.go: the SDK's log line about it is rate-limited).
const notServedMarker = "not served: "

// newProjectWorker builds (does not start) a project's worker. The SDK panics on
// options it refuses; that becomes an error for this project alone.
func newProjectWorker(sh *shared, project uuid.UUID, workerID, taskQueue string,
	opts workerOptions, eff effectiveOptions, log *slog.Logger, onFatal func(error)) (pw *projectWorker, err error) {
	defer func() {
		if p := recover(); p != nil {
			pw, err = nil, fmt.Errorf("create worker for project %s: the Temporal SDK refused its options: %v", project, p)
		}
	}()
	cfg := sh.cfg
	pw = &projectWorker{
		project:   project,
		id:        workerID,
		taskQueue: taskQueue,
		options:   opts,
		effective: eff,
		startedAt: time.Now(),
		log:       log,
		shared:    sh,
	}
	wo := worker.Options{
		Identity:                                workerID,
		MaxConcurrentWorkflowTaskPollers:        eff.WorkflowPollers,
		MaxConcurrentActivityTaskPollers:        eff.ActivityPollers,
		MaxConcurrentActivityExecutionSize:      eff.MaxActivities,
		MaxConcurrentWorkflowTaskExecutionSize:  eff.MaxWorkflowTasks,
		MaxConcurrentLocalActivityExecutionSize: eff.MaxLocalActivities,
		WorkerStopTimeout:                       cfg.WorkerStopTimeout,
		OnFatalError:                            onFatal,
	}
	pw.w = worker.New(sh.temporal, taskQueue, wo)
	pw.w.RegisterDynamicWorkflow(pw.runWorkflow, workflow.DynamicRegisterOptions{})
	pw.w.RegisterDynamicActivity(pw.runActivity, activity.DynamicRegisterOptions{})
	return pw, nil
}

// Stop stops the Temporal worker once; later calls return at once.
func (pw *projectWorker) Stop() {
	pw.stopOnce.Do(pw.w.Stop)
}

// runWorkflow is the dynamic workflow: every workflow type of the project lands here
// and is resolved against the served set, then pinned for the rest of the run. A run
// that the interpreter continued as new keeps the version of the run before: its
// second argument (a flow.Continued, read only when Temporal says the run was
// continued, so a client cannot pass one) names the compiled version, loaded through
// CompiledLoader when the worker no longer serves it.
func (pw *projectWorker) runWorkflow(ctx workflow.Context, args converter.EncodedValues) (any, error) {
	info := workflow.GetInfo(ctx)
	name := info.WorkflowType.Name
	waited := workflow.Now(ctx).Sub(info.WorkflowStartTime)
	raw, count := rawArguments(args)
	var carried *flow.Continued
	if info.ContinuedExecutionRunID != "" && count == 2 {
		var c flow.Continued
		if err := converter.GetDefaultDataConverter().FromPayload(raw[1].Payload(), &c); err == nil {
			carried = &c
		}
	}
	var pin pinned
	err := workflow.SideEffect(ctx, func(workflow.Context) any {
		set := pw.served.Load()
		sw := set.workflows[name]
		search := pw.shared.search.pin(pw.project.String())
		if carried != nil && carried.Pin != "" {
			if sw != nil && sw.compiledID.String() == carried.Pin {
				return pinned{CompiledID: sw.compiledID.String(), Version: sw.version, Code: sw.code, MaxSteps: pw.shared.cfg.MaxNodeExecutions,
					Search: search, Language: sw.language}
			}
			return pinned{CompiledID: carried.Pin, MaxSteps: pw.shared.cfg.MaxNodeExecutions, Search: search} // loaded below
		}
		if sw != nil {
			return pinned{CompiledID: sw.compiledID.String(), Version: sw.version, Code: sw.code, MaxSteps: pw.shared.cfg.MaxNodeExecutions,
				Search: search, Language: sw.language}
		}
		return pinned{NotServed: pw.notServed(name), GaveUp: waited >= pw.shared.cfg.UnservedGrace}
	}).Get(&pin)
	if err != nil {
		return nil, fmt.Errorf("pin definition of %s: %w", name, err)
	}
	if pin.CompiledID == "" {
		if pin.GaveUp {
			return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s, and was not for %s since the run started (RECONCILER_UNSERVED_GRACE)",
				pin.NotServed, pw.shared.cfg.UnservedGrace), failureNotServed, nil)
		}
		// Within the grace period, fail the workflow task, not the run: Temporal retries
		// the task, and the run proceeds once the workflow is served (a compile, an
		// activation, the project started). The message marks the SDK's log line, which
		// the logger rate-limits.
		panic(notServedMarker + pw.notServed(name))
	}
	if pin.Code == "" {
		if pin, err = pw.loadPinned(ctx, name, pin); err != nil {
			return nil, err
		}
	}
	if err := upsertSearch(ctx, pin); err != nil {
		return nil, fmt.Errorf("set search attributes of %s: %w", name, err)
	}
	if script.Is(pin.Language) {
		return pw.runScript(ctx, name, pin, args) // scripted.go
	}
	if script.Is(pin.Language) {
		return pw.runScript(ctx, name, pin, args) // scripted.go
	}
	def, err := pw.definition(pin)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("workflow %s version %d cannot be loaded: %s", name, pin.Version, err), "InvalidDefinition", nil)
	}
	var input any
	if flow.Extended(ctx) {
		if carried != nil {
			count = 1
		}
		if input, err = workflowInput(name, raw, count); err != nil {
			return nil, err
		}
	} else if args.HasValues() {
		if err := args.Get(&input); err != nil {
			return nil, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("workflow %s: input is not JSON: %s", name, err), "InvalidInput", nil)
		}
	}
	return flow.Execute(ctx, def, input, flow.Options{
		MaxSteps:  pin.MaxSteps,
		Pinned:    map[string]any{"compiled_id": pin.CompiledID, "version": pin.Version},
		Pin:       pin.CompiledID,
		Continued: carried,
	})
}

// rawArguments returns the run's first arguments undecoded, and how many there are
// (3 means 3 or more).
func rawArguments(args converter.EncodedValues) ([3]converter.RawValue, int) {
	var raw [3]converter.RawValue
	if !args.HasValues() || args.Get(&raw[0], &raw[1], &raw[2]) != nil {
		return raw, 0
	}
	n := 0
	for _, r := range raw {
		if r.Payload() != nil {
			n++
		}
	}
	return raw, n
}

// workflowInput is a run's input: its only argument, {} without one. Several
// arguments, or one over the payload limit, fail the run at once.
func workflowInput(name string, raw [3]converter.RawValue, count int) (any, error) {
	invalid := func(format string, args ...any) error {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("workflow %s: ", name)+fmt.Sprintf(format, args...), flow.FailureInput, nil)
	}
	switch {
	case count == 0:
		return map[string]any{}, nil
	case count > 1:
		return nil, invalid("started with %s arguments: a workflow takes one, its input", map[bool]string{true: "3 or more", false: "2"}[count > 2])
	}
	if size := flow.PayloadSize(raw[0].Payload()); size > flow.MaxPayload {
		return nil, invalid("the input is %d bytes, over the %d bytes a Temporal payload may carry", size, flow.MaxPayload)
	}
	var input any
	if err := converter.GetDefaultDataConverter().FromPayload(raw[0].Payload(), &input); err != nil {
		return nil, invalid("input is not JSON: %s", err)
	}
	return input, nil
}

// CompiledLoader reads a compiled version of one of a project's workflows by id: its
// version number and code. It must find only versions of that workflow of that
// project, and wrap ErrCompiledNotFound when there is none. The worker calls it (in a
// local activity, recorded in the run's history) only for a run continued as new whose
// version it no longer serves.
type CompiledLoader func(ctx context.Context, project uuid.UUID, workflow string, compiledID uuid.UUID) (version int32, code string, err error)

// ErrCompiledNotFound is what a CompiledLoader wraps when the version does not exist.
var ErrCompiledNotFound = errors.New("compiled version not found")

// SetCompiledLoader replaces how workers load the compiled versions that runs continued
// as new are pinned to and that they no longer serve (by default: from the database,
// dbCompiledLoader). Tests wrap the default one to count its calls.
func (r *Reconciler) SetCompiledLoader(l CompiledLoader) { r.shared.compiled.Store(&l) }

// CompiledLoader is how workers load pinned versions they no longer serve.
func (r *Reconciler) CompiledLoader() CompiledLoader {
	if l := r.shared.compiled.Load(); l != nil {
		return *l
	}
	return nil
}

// dbCompiledLoader reads a pinned version from compiled_workflows (rows are immutable).
func dbCompiledLoader(store *db.Store) CompiledLoader {
	return func(ctx context.Context, project uuid.UUID, workflow string, compiledID uuid.UUID) (int32, string, error) {
		row, err := store.GetCompiledVersion(ctx, db.GetCompiledVersionParams{ID: compiledID, ProjectID: project, WorkflowName: workflow})
		if errors.Is(err, db.ErrNotFound) {
			return 0, "", fmt.Errorf("%w: %s", ErrCompiledNotFound, compiledID)
		}
		if err != nil {
			return 0, "", fmt.Errorf("load compiled version %s: %w", compiledID, err)
		}
		return row.Version, row.WorkflowCode, nil
	}
}

// loadedVersion is the result of the local activity that loads a pinned version.
type loadedVersion struct {
	Version int32  `json:"version"`
	Code    string `json:"code"`
}

// loadPinned fills in the code of a pinned version the worker did not serve when the
// run started (a run continued as new), through a local activity.
func (pw *projectWorker) loadPinned(ctx workflow.Context, name string, pin pinned) (pinned, error) {
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout:    10 * time.Second,
		ScheduleToCloseTimeout: 5 * time.Minute,
	})
	var loaded loadedVersion
	if err := workflow.ExecuteLocalActivity(lctx, loadCompiledActivity(pw), name, pin.CompiledID).Get(lctx, &loaded); err != nil {
		return pin, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("workflow %s: the compiled version %s this run continues with cannot be loaded: %s", name, pin.CompiledID, err), "InvalidDefinition", nil)
	}
	pin.Version, pin.Code = loaded.Version, loaded.Code
	return pin, nil
}

// loadCompiledActivity is the local activity behind loadPinned. It is not a method
// value, nor inlined into one: the SDK resolves functions whose name has a receiver by
// name in the worker's registry, where the dynamic activity would answer.
//
//go:noinline
func loadCompiledActivity(pw *projectWorker) func(ctx context.Context, name, compiledID string) (loadedVersion, error) {
	return func(ctx context.Context, name, compiledID string) (loadedVersion, error) {
		return pw.loadCompiled(ctx, name, compiledID)
	}
}

// loadCompiled loads a pinned version through the CompiledLoader.
func (pw *projectWorker) loadCompiled(ctx context.Context, name, compiledID string) (loadedVersion, error) {
	load := pw.shared.compiled.Load()
	if load == nil {
		return loadedVersion{}, temporal.NewNonRetryableApplicationError("this service cannot load compiled versions it does not serve (no CompiledLoader)", "InvalidDefinition", nil)
	}
	id, err := uuid.Parse(compiledID)
	if err != nil {
		return loadedVersion{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("%q is not a compiled version id", compiledID), "InvalidDefinition", nil)
	}
	version, code, err := (*load)(ctx, pw.project, name, id)
	if errors.Is(err, ErrCompiledNotFound) {
		return loadedVersion{}, temporal.NewNonRetryableApplicationError(err.Error(), "InvalidDefinition", err)
	}
	if err != nil {
		return loadedVersion{}, err
	}
	return loadedVersion{Version: version, Code: code}, nil
}

func (pw *projectWorker) notServed(name string) string {
	set := pw.served.Load()
	if reason, ok := set.errors[name]; ok {
		return fmt.Sprintf("workflow %q is not served by this project's worker: %s", name, reason)
	}
	return fmt.Sprintf("workflow %q is not an active, compiled workflow of this project", name)
}

// definition returns the parsed definition a run is pinned to: the served one when it
// is still current, else the cached or freshly parsed pinned code.
func (pw *projectWorker) definition(pin pinned) (*flow.Definition, error) {
	for _, sw := range pw.served.Load().workflows {
		if sw.compiledID.String() == pin.CompiledID && sw.def != nil {
			return sw.def, nil
		}
	}
	return pw.shared.defs.get(pin.CompiledID, pin.Code)
}
