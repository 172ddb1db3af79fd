package reconciler_test

import (
	"context"
	"fmt"
	osexec "os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flowbuilder/reconciler/internal/devenv"
	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// waitSearchKnown waits until the service has learnt whether its namespace has the
// search attributes (want: 1 it has, 0 it lacks them).
func waitSearchKnown(t *testing.T, svc *service, want float64) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		_, text := get(t, "http://"+svc.OpsAddr()+"/metrics")
		p, okP := metricValue(t, text, "reconciler_search_attributes_available", `attribute="`+reconciler.SearchAttributeProject+`"`)
		v, okV := metricValue(t, text, "reconciler_search_attributes_available", `attribute="`+reconciler.SearchAttributeVersion+`"`)
		return okP && okV && p == want && v == want, fmt.Sprintf("project %v (%v), version %v (%v)", p, okP, v, okV)
	})
}

// finish runs a workflow to its end and returns its run.
func finish(t *testing.T, tc client.Client, queue, workflowType string, input any) client.WorkflowRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflowType + "-" + uuid.NewString(), TaskQueue: queue}, workflowType, input)
	if err != nil {
		t.Fatalf("start %s: %v", workflowType, err)
	}
	if err := run.Get(ctx, nil); err != nil {
		t.Fatalf("%s: %v", workflowType, err)
	}
	return run
}

// temporalList runs `temporal workflow list --query q` against the dev server at address.
func temporalList(t *testing.T, address, namespace, query string) string {
	t.Helper()
	cli, err := devenv.FindTemporalCLI()
	if err != nil {
		t.Fatal(err)
	}
	out, err := osexec.Command(cli, "workflow", "list", "--address", address, "--namespace", namespace,
		"--query", query, "--output", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("temporal workflow list --query %q: %v\n%s", query, err, out)
	}
	return string(out)
}

// Every run sets ReconcilerProjectId and ReconcilerCompiledVersion: the Temporal CLI
// lists a project's runs, and those of one compiled version.
func TestRunsAreFoundByProjectAndVersion(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	svc := startService(t, db, func(c *reconciler.Config) { c.OpsAddr = "127.0.0.1:0" })
	waitSearchKnown(t, svc, 1)

	id, queue := project(t, db.Pool)
	wf := workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	v1 := finish(t, tc, queue, "greet", map[string]any{"name": "one"})
	compile(t, db.Pool, wf, greetV2)
	g := generation(t, db.Pool, id)
	waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool { return r.Generation == g })
	v2 := finish(t, tc, queue, "greet", map[string]any{"name": "two"})

	address := testenv.TemporalAddress(t)
	byProject := fmt.Sprintf("%s = '%s'", reconciler.SearchAttributeProject, id)
	byVersion := fmt.Sprintf("%s AND %s = 1", byProject, reconciler.SearchAttributeVersion)
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		all := temporalList(t, address, "default", byProject)
		first := temporalList(t, address, "default", byVersion)
		ok := strings.Contains(all, v1.GetRunID()) && strings.Contains(all, v2.GetRunID()) &&
			strings.Contains(first, v1.GetRunID()) && !strings.Contains(first, v2.GetRunID())
		return ok, fmt.Sprintf("query %q:\n%s\nquery %q:\n%s", byProject, all, byVersion, first)
	})
	t.Logf("temporal workflow list --query %q finds both runs; with version 1 only the first", byProject)
}

// A namespace without the search attributes: runs set none, and no workflow task fails.
func TestNamespaceWithoutSearchAttributesChangesNothing(t *testing.T) {
	t.Parallel()
	address := testenv.TemporalAddress(t)
	ns := "bare-" + uuid.NewString()[:8]
	admin := testenv.TemporalClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := admin.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace: ns, WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	tc, err := client.Dial(client.Options{HostPort: address, Namespace: ns, Logger: quietSDK{}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		_, err := tc.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
		return err == nil, fmt.Sprint(err)
	})

	db := testenv.Database(t)
	svc := startService(t, db, func(c *reconciler.Config) { c.OpsAddr = "127.0.0.1:0"; c.TemporalNamespace = ns })
	waitSearchKnown(t, svc, 0)
	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	var run client.WorkflowRun
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		r, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "bare-" + uuid.NewString(), TaskQueue: queue}, "greet", map[string]any{"name": "bare"})
		if err != nil {
			return false, err.Error() // the new namespace may take a moment to reach every service
		}
		run = r
		return true, ""
	})
	var out string
	if err := run.Get(ctx, &out); err != nil || out != "Hello, bare!" {
		t.Fatalf("run in a namespace without search attributes: %q, %v", out, err)
	}
	it := tc.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch e.GetEventType() {
		case enums.EVENT_TYPE_WORKFLOW_TASK_FAILED:
			t.Errorf("event %s in a namespace without the search attributes", e.GetEventType())
		case enums.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
			// workflow.GetVersion upserts Temporal's own TemporalChangeVersion, which every
			// namespace has; the service's attributes must not be there.
			for name := range e.GetUpsertWorkflowSearchAttributesEventAttributes().GetSearchAttributes().GetIndexedFields() {
				if name != "TemporalChangeVersion" {
					t.Errorf("search attribute %s upserted in a namespace without the service's attributes", name)
				}
			}
		}
	}

	// The command behind the README's one line registers them, once.
	added, err := reconciler.RegisterSearchAttributes(ctx, tc, ns)
	if err != nil || len(added) != 2 {
		t.Fatalf("RegisterSearchAttributes: added %v, %v", added, err)
	}
	if again, err := reconciler.RegisterSearchAttributes(ctx, tc, ns); err != nil || len(again) != 0 {
		t.Fatalf("RegisterSearchAttributes again: added %v, %v", again, err)
	}
}

type quietSDK struct{}

func (quietSDK) Debug(string, ...any) {}
func (quietSDK) Info(string, ...any)  {}
func (quietSDK) Warn(string, ...any)  {}
func (quietSDK) Error(string, ...any) {}
