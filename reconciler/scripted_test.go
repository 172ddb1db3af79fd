package reconciler

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/flowbuilder/reconciler/reconciler/script"
)

// buildServed compiles modules and TypeScript components; a module that does not
// compile is left out with its position, as an invalid definition is, and the rest
// of the project is served.
func TestBuildServedModules(t *testing.T) {
	id := func() *uuid.UUID { u := uuid.New(); return &u }
	str := func(s string) *string { return &s }
	wfs, _ := json.Marshal([]bundleWorkflow{
		{Name: "ts", CompiledID: id(), Version: 2, Language: "typescript", Code: str("export default async function ts(n: number) { return n * 2 }")},
		{Name: "js", CompiledID: id(), Version: 1, Language: "javascript", Code: str("export default async function js() {}")},
		{Name: "bad", CompiledID: id(), Version: 3, Language: "typescript", Code: str("export default async function bad() {\n  return 1 +;\n}")},
		{Name: "json", CompiledID: id(), Version: 1, Language: "json", Code: str(`{"version": 1, "start": "r", "nodes": {"r": {"type": "return", "value": 1}}}`)},
	})
	comps, _ := json.Marshal([]bundleComponent{
		{Name: "vat", Language: "typescript", Code: "function vat(x: { net: number }): number { return x.net * 1.2 }"},
		{Name: "broken", Language: "typescript", Code: "function broken(x: number { return x }"},
	})
	set, err := buildServed(7, wfs, comps, script.NewCache(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ts", "js", "json"} {
		if set.workflows[name] == nil {
			t.Errorf("%s not served: %v", name, set.errors[name])
		}
	}
	if p := set.workflows["ts"].program; p == nil || set.workflows["ts"].language != "typescript" {
		t.Errorf("ts served without its program")
	}
	if msg := set.errors["bad"]; !strings.HasPrefix(msg, "version 3: 2:13: Unexpected") {
		t.Errorf("bad: %q, want its version and position", msg)
	}
	if set.components["vat"].err != nil {
		t.Errorf("vat: %v", set.components["vat"].err)
	}
	if msg := set.componentErrors["broken"]; !strings.Contains(msg, "TypeScript: 1:") {
		t.Errorf("broken: %q, want the TypeScript position", msg)
	}
}
