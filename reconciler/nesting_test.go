package reconciler_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

// Code nested hundreds of thousands deep overflows the Go stack of a recursive parser
// (esbuild, goja's, expr's), and a Go stack overflow ends the process, with every
// tenant's worker in it. Such code is refused as not compiling; the service, and the
// tenant's other workflows, keep running.
func TestCodeNestedTooDeeplyIsRefusedNotFatal(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	const n = 400_000
	nested := strings.Repeat("[", n) + strings.Repeat("]", n)

	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "greet", greetV1)
	moduleWorkflow(t, db.Pool, id, "deep_ts", "typescript",
		"const x = "+nested+";\nexport default async function deep(): Promise<number> { return x.length; }\n")
	value, _ := json.Marshal("${" + nested + "}")
	deepExpr := workflow(t, db.Pool, id, "deep_expr", fmt.Sprintf(`{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "value": %s}}}`, value))
	addComponent(t, db, id, "deep", "function deep() { return "+nested+" }")
	setDesired(t, db.Pool, id, "running")

	row := waitWorker(t, db.Pool, id, time.Minute, func(r workerRow) bool {
		return r.Status == "running" && r.Generation == generation(t, db.Pool, id)
	})
	errs, _ := row.Metadata["workflow_errors"].(map[string]any)
	for _, name := range []string{"deep_ts", "deep_expr"} {
		if msg := fmt.Sprint(errs[name]); !strings.Contains(msg, "nests too deeply") || len(msg) > 1000 {
			t.Errorf("workflow_errors[%s] = %.300q; want it refused as nesting too deeply, briefly", name, msg)
		}
	}
	components, _ := row.Metadata["component_errors"].(map[string]any)
	if msg := fmt.Sprint(components["deep"]); !strings.Contains(msg, "nests too deeply") {
		t.Errorf("component_errors[deep] = %.300q; want it refused as nesting too deeply", msg)
	}
	if c := waitCheck(t, db.Pool, deepExpr); c.Valid {
		t.Errorf("the deep expression's check: %+v, want invalid", c)
	}
	var out string
	if err := execute(t, tc, queue, "greet", map[string]any{"name": "still"}, &out); err != nil || out != "Hello, still!" {
		t.Fatalf("the project's valid workflow: %q, %v", out, err)
	}
}
