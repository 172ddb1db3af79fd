package script

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"modernc.org/quickjs"
)

// The declarations, the shim and the runtime name the same API.
func TestDeclarationsNameWhatRuns(t *testing.T) {
	dts, err := os.ReadFile("workflow.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, m := range regexp.MustCompile(`(?m)^  export (?:function|class|const) (\w+)`).FindAllStringSubmatch(string(dts), -1) {
		if !slices.Contains(declared, m[1]) {
			declared = append(declared, m[1])
		}
	}
	vm, err := newVM(DefaultLimits, checkHost)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	v, err := vm.Eval("JSON.stringify(Object.keys(globalThis.__temporal_workflow))", quickjs.EvalGlobal)
	if err != nil {
		t.Fatal(err)
	}
	var runtime []string
	_ = json.Unmarshal([]byte(v.(string)), &runtime)
	for what, names := range map[string][]string{"workflow.d.ts": declared, "runtime.js": runtime} {
		a, b := slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(Exports))
		if !slices.Equal(a, b) {
			t.Errorf("%s exports %v,\nthe shim %v", what, a, b)
		}
	}
}

// tsc is the TypeScript compiler installed by `make typescript` (npm's typescript in
// bin/typescript, a test-time tool only), or RECONCILER_TSC.
func tsc(t *testing.T) string {
	if p := os.Getenv("RECONCILER_TSC"); p != "" {
		return p
	}
	p, _ := filepath.Abs(filepath.Join("..", "..", "bin", "typescript", "node_modules", ".bin", "tsc"))
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tsc not found at %s: make typescript installs it", p)
		}
		t.Skipf("tsc not found at %s: run make typescript (needs Node.js and npm)", p)
	}
	return p
}

func typeCheck(t *testing.T, files ...string) (string, error) {
	dts, _ := filepath.Abs("workflow.d.ts")
	abs := []string{dts}
	for _, f := range files {
		a, _ := filepath.Abs(f)
		abs = append(abs, a)
	}
	cfg, _ := json.Marshal(map[string]any{
		"compilerOptions": map[string]any{"strict": true, "noEmit": true, "target": "ES2022", "lib": []string{"ES2022"},
			"module": "ESNext", "moduleResolution": "Bundler", "types": []string{}, "noUnusedLocals": false},
		"files": abs,
	})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tsconfig.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tsc(t), "-p", filepath.Join(dir, "tsconfig.json")).CombinedOutput()
	return string(out), err
}

// The example workflows (the integration tests run them) type-check against the
// declarations with tsc, and code using what is not supported does not.
func TestDeclarationsTypeCheckTheExamples(t *testing.T) {
	examples, err := filepath.Glob(filepath.Join("testdata", "workflows", "*.ts"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples (%v)", err)
	}
	if out, err := typeCheck(t, examples...); err != nil {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.ts")
	if err := os.WriteFile(bad, []byte(`import { getExternalWorkflowHandle, sleep } from '@temporalio/workflow';
export default async function bad() { await sleep(true); getExternalWorkflowHandle('x'); process.exit(1); }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := typeCheck(t, bad)
	for _, want := range []string{"getExternalWorkflowHandle", "boolean", "process"} {
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("tsc on unsupported code: %v, output lacks %q:\n%s", err, want, out)
		}
	}
}
