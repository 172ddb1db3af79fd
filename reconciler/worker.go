package reconciler

import (
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
	temporal client.Client
	cfg      Config
	defs     *definitionCache
	scripts  *script.Cache // compiled TypeScript / JavaScript modules by compiled id
	warm     *script.Warm  // their runs' VMs, made ahead of need
	http     *egress.Client
	limits   component.Limits
}

// pinned is recorded in a run's history (a SideEffect) when it starts: the run uses
// this definition until it ends, whatever is compiled or served later.
type pinned struct {
	CompiledID string `json:"compiled_id"`
	Version    int32  `json:"version"`
	Code       string `json:"code"`
	MaxSteps   int    `json:"max_steps"`
	Language   string `json:"language,omitempty"` // "" is json
}

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
// and is resolved against the served set, then pinned for the rest of the run.
func (pw *projectWorker) runWorkflow(ctx workflow.Context, args converter.EncodedValues) (any, error) {
	name := workflow.GetInfo(ctx).WorkflowType.Name
	var pin pinned
	err := workflow.SideEffect(ctx, func(workflow.Context) any {
		set := pw.served.Load()
		if sw := set.workflows[name]; sw != nil {
			return pinned{CompiledID: sw.compiledID.String(), Version: sw.version, Code: sw.code, MaxSteps: pw.shared.cfg.MaxNodeExecutions, Language: sw.language}
		}
		return pinned{}
	}).Get(&pin)
	if err != nil {
		return nil, fmt.Errorf("pin definition of %s: %w", name, err)
	}
	if pin.CompiledID == "" {
		// Fail the workflow task, not the run: Temporal retries the task, and the run
		// proceeds once the workflow is served (as with any unregistered type).
		panic(pw.notServed(name))
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
	if args.HasValues() {
		if err := args.Get(&input); err != nil {
			return nil, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("workflow %s: input is not JSON: %s", name, err), "InvalidInput", nil)
		}
	}
	return flow.Execute(ctx, def, input, flow.Options{
		MaxSteps: pin.MaxSteps,
		Pinned:   map[string]any{"compiled_id": pin.CompiledID, "version": pin.Version},
	})
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
