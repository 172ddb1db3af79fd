package reconciler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

// check is a compiled version's row of compiled_workflow_checks.
type check struct {
	Valid    bool
	Problems []struct {
		Node    *string `json:"node"`
		Line    int     `json:"line"`
		Column  int     `json:"column"`
		Message string  `json:"message"`
	}
	Latency time.Duration // from the compile's commit to the check
}

// waitCheck waits for the check of the newest compiled version of a workflow.
func waitCheck(t *testing.T, pool *pgxpool.Pool, workflowID uuid.UUID) check {
	t.Helper()
	var c check
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		var raw []byte
		var latency float64
		err := pool.QueryRow(context.Background(), `
			SELECT k.valid, k.problems, extract(epoch FROM k.checked_at - c.created_at)
			FROM (SELECT * FROM compiled_workflows WHERE workflow_id = $1 ORDER BY version DESC LIMIT 1) c
			JOIN compiled_workflow_checks k ON k.compiled_workflow_id = c.id`, workflowID).Scan(&c.Valid, &raw, &latency)
		if err != nil {
			return false, err.Error()
		}
		c.Latency = time.Duration(latency * float64(time.Second))
		return json.Unmarshal(raw, &c.Problems) == nil, string(raw)
	})
	return c
}

// Every compile gets its validation result in SQL, with the node each problem
// concerns, whether or not its project runs; a compile that does not validate never
// takes the valid version offline: it keeps serving, and the worker's row says why the
// newer one is not served.
func TestCompileFeedbackAndLastValidVersionServes(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	const bad = `{"version": 1, "start": "a", "nodes": {
		"a": {"type": "activity", "activity": "sendMail", "next": "b"},
		"b": {"type": "return", "value": "${nodes.zzz.output}"}}}`

	for _, running := range []bool{true, false} {
		t.Run(fmt.Sprintf("running=%v", running), func(t *testing.T) {
			id, queue := project(t, db.Pool)
			wf := workflow(t, db.Pool, id, "greet", greetV1)
			if running {
				setDesired(t, db.Pool, id, "running")
				waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
			}
			if c := waitCheck(t, db.Pool, wf); !c.Valid || len(c.Problems) != 0 {
				t.Fatalf("the first version: %+v, want valid", c)
			}

			compile(t, db.Pool, wf, bad)
			c := waitCheck(t, db.Pool, wf)
			t.Logf("feedback %s after the compile's commit", c.Latency.Round(time.Millisecond))
			nodes := map[string]string{}
			for _, p := range c.Problems {
				if p.Node != nil {
					nodes[*p.Node] = p.Message
				}
			}
			if c.Valid || !strings.Contains(nodes["a"], `unknown activity "sendMail"`) {
				t.Errorf("the bad version's check: %+v; want invalid, node a naming the unknown activity", c)
			}

			if !running {
				setDesired(t, db.Pool, id, "running")
			}
			row := waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool {
				return r.Status == "running" && r.Generation == generation(t, db.Pool, id)
			})
			served, _ := row.Metadata["workflows"].(map[string]any)
			errs, _ := row.Metadata["workflow_errors"].(map[string]any)
			if served["greet"] != float64(1) || !strings.Contains(fmt.Sprint(errs["greet"]), "version 2") ||
				!strings.Contains(fmt.Sprint(errs["greet"]), "serving version 1") {
				t.Errorf("after the bad compile the row serves %v with errors %v; want version 1 served and version 2's reason", served, errs)
			}
			var out string
			if err := execute(t, tc, queue, "greet", map[string]any{"name": "still"}, &out); err != nil || out != "Hello, still!" {
				t.Fatalf("the valid version after a bad compile: %q, %v", out, err)
			}
		})
	}
}

// A TypeScript module gets the same feedback, placed by line and column in its source,
// and a module that does not compile leaves its workflow's valid version serving.
func TestTypeScriptCompileFeedbackAndLastValidVersionServes(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	id, queue := project(t, db.Pool)
	wf := moduleWorkflow(t, db.Pool, id, "hello", "typescript",
		"export default async function hello(name: string): Promise<string> {\n  return `v1 ${name}`;\n}\n")
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))
	if c := waitCheck(t, db.Pool, wf); !c.Valid || len(c.Problems) != 0 {
		t.Fatalf("the first version: %+v, want valid", c)
	}

	compileModule(t, db.Pool, wf, "typescript",
		"export default async function hello(name: string): Promise<string> {\n  return `v2 ${name}` +;\n}\n")
	c := waitCheck(t, db.Pool, wf)
	if c.Valid || len(c.Problems) != 1 || c.Problems[0].Line != 2 || c.Problems[0].Column == 0 {
		t.Fatalf("the module that does not compile: %+v; want invalid, one problem on line 2", c)
	}
	row := waitWorker(t, db.Pool, id, 30*time.Second, func(r workerRow) bool {
		return r.Status == "running" && r.Generation == generation(t, db.Pool, id)
	})
	if errs, _ := row.Metadata["workflow_errors"].(map[string]any); !strings.Contains(fmt.Sprint(errs["hello"]), "version 2") {
		t.Errorf("workflow_errors %v; want version 2's reason", errs)
	}
	out, err := result(t, start(t, tc, queue, "hello", "still"))
	if err != nil || out != `"v1 still"` {
		t.Fatalf("the valid version after a bad compile: %s, %v", out, err)
	}
}
