package db_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

// compiled_workflows.language: JSON definitions keep their shape check, modules are
// stored as written (the worker compiles them), the size limit holds for both, and
// components may be TypeScript.
func TestCompiledLanguage(t *testing.T) {
	t.Parallel()
	d := testenv.Database(t)
	p := d.Pool
	project := newProject(t, p)
	var wf string
	if err := p.QueryRow(context.Background(),
		`INSERT INTO workflows (project_id, name) VALUES ($1, 'w') RETURNING id::text`, project).Scan(&wf); err != nil {
		t.Fatal(err)
	}
	mustExec(t, p, `INSERT INTO compiled_workflows (workflow_id, language, workflow_code) VALUES ($1, 'typescript', 'export default async function w(): Promise<void> {}')`, wf)
	mustExec(t, p, `INSERT INTO compiled_workflows (workflow_id, language, workflow_code) VALUES ($1, 'javascript', 'this is not JSON, and not checked here')`, wf)
	mustExec(t, p, `INSERT INTO components (project_id, name, implementation_language, implementation_code) VALUES ($1, 'ts', 'typescript', 'function ts(x: number) { return x }')`, project)
	var lang string
	if err := p.QueryRow(context.Background(), `INSERT INTO compiled_workflows (workflow_id, workflow_code) VALUES ($1, '{"version": 1, "start": "a", "nodes": {}}') RETURNING language`, wf).Scan(&lang); err != nil || lang != "json" {
		t.Fatalf("default language %q, %v", lang, err)
	}
	for what, c := range map[string]struct{ sql, want string }{
		"another language":   {`INSERT INTO compiled_workflows (workflow_id, language, workflow_code) VALUES ($1, 'python', 'x')`, "compiled_workflows_language_check"},
		"JSON still checked": {`INSERT INTO compiled_workflows (workflow_id, language, workflow_code) VALUES ($1, 'json', 'export default 1')`, "workflow_code is not valid JSON"},
		"oversized module":   {`INSERT INTO compiled_workflows (workflow_id, language, workflow_code) VALUES ($1, 'typescript', repeat('x', 1100000))`, "compiled_workflows_workflow_code_size_check"},
	} {
		if msg := execErr(t, p, c.sql, wf); !strings.Contains(msg, c.want) {
			t.Errorf("%s: error %q does not say %q", what, msg, c.want)
		}
	}
}
