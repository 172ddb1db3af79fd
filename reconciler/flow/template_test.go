package flow

import (
	"encoding/json"
	"reflect"
	"testing"
)

func evalTemplate(t *testing.T, tmpl string, s Scope) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(tmpl), &v); err != nil {
		t.Fatal(err)
	}
	r := refs{nodes: map[string]bool{}, signals: map[string]bool{}}
	compiled, err := compileTemplate(v, &r)
	if err != nil {
		t.Fatalf("compile %s: %v", tmpl, err)
	}
	out, err := compiled.Eval(s)
	if err != nil {
		t.Fatalf("eval %s: %v", tmpl, err)
	}
	return out
}

func TestTemplates(t *testing.T) {
	scope := Scope{
		Input:   map[string]any{"name": "Ada", "n": float64(3), "tags": []any{"a", "b"}, "m": map[string]any{"z": 1.0, "a": 2.0, "k": 3.0}},
		Nodes:   map[string]any{"greet": map[string]any{"output": map[string]any{"message": "hi"}}},
		Signals: map[string]any{"approve": map[string]any{"ok": true}},
	}
	cases := []struct {
		tmpl string
		want any
	}{
		{`"plain"`, "plain"},
		{`42`, float64(42)},
		{`"${input.n}"`, float64(3)},                 // whole expression keeps its JSON type
		{`"${input.n * 2}"`, 6.0},                    // arithmetic on JSON numbers
		{`"n=${input.n}"`, "n=3"},                    // interpolation makes text
		{`"Hello, ${input.name}!"`, "Hello, Ada!"},   // the SPEC example
		{`"${input.tags}"`, []any{"a", "b"}},         // arrays stay arrays
		{`"tags: ${input.tags}"`, `tags: ["a","b"]`}, // and read as JSON inside text
		{`"${nodes.greet.output.message}"`, "hi"},    // node outputs
		{`"${signals.approve.ok}"`, true},            // signal payloads
		{`"${input.missing}"`, nil},                  // missing keys are null
		{`"x ${input.missing} y"`, "x null y"},
		{`{"a": ["${input.name}", {"b": "${input.n > 2}"}], "c": 1}`, map[string]any{"a": []any{"Ada", map[string]any{"b": true}}, "c": float64(1)}},
		{`"$${input.name}"`, "${input.name}"},        // escaped
		{`"${ {\"k\": \"}\"}.k }"`, "}"},             // braces and quotes inside an expression
		{`"${keys(input.m)}"`, []any{"a", "k", "z"}}, // sorted: deterministic under replay
		{`"${values(input.m)}"`, []any{2.0, 3.0, 1.0}},
		{`"${upper(input.name)}"`, "ADA"},
	}
	for _, c := range cases {
		if got := evalTemplate(t, c.tmpl, scope); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.tmpl, got, c.want)
		}
	}
}

func TestExpressionsCannotReadTheClock(t *testing.T) {
	r := refs{nodes: map[string]bool{}, signals: map[string]bool{}}
	if _, err := compileExpr("now()", &r); err == nil {
		t.Fatal("now() compiled; expressions must be deterministic under replay")
	}
}

func TestTemplateRuntimeErrorsAreReported(t *testing.T) {
	r := refs{nodes: map[string]bool{}, signals: map[string]bool{}}
	tmpl, err := compileTemplate("${input.a.b.c()}", &r)
	if err != nil {
		return // rejected at compile time is fine too
	}
	if _, err := tmpl.Eval(Scope{Input: map[string]any{"a": 1.0}}); err == nil {
		t.Fatal("calling a number succeeded")
	}
}
