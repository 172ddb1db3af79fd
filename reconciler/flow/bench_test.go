package flow

import (
	"encoding/json"
	"testing"
)

// benchScope is what a typical run sees: a small input and a few node outputs.
func benchScope() Scope {
	items := make([]any, 20)
	for i := range items {
		items[i] = map[string]any{"sku": "sku-" + string(rune('a'+i)), "price": float64(i) + 0.5, "qty": float64(i % 3)}
	}
	return Scope{
		Input: map[string]any{
			"name":  "Ada",
			"email": "ada@example.com",
			"n":     float64(3),
			"tags":  []any{"a", "b", "c"},
			"items": items,
		},
		Nodes: map[string]any{
			"greet": map[string]any{"output": map[string]any{"message": "hi", "status": float64(200)}},
			"fetch": map[string]any{"output": map[string]any{"body": map[string]any{"ok": true, "id": "42"}}},
		},
		Signals: map[string]any{"approve": map[string]any{"ok": true, "by": "bob"}},
	}
}

// benchTemplate is a typical activity input: interpolation, whole-value expressions,
// arithmetic, a builtin, a comparison and a small map/filter over input items.
const benchTemplate = `{
  "to": "${input.email}",
  "subject": "Hello, ${input.name}! You have ${len(input.items)} items",
  "count": "${input.n * 2}",
  "tags": "${input.tags}",
  "greeting": "${upper(nodes.greet.output.message)}",
  "ok": "${nodes.greet.output.status == 200 && signals.approve.ok}",
  "id": "order-${nodes.fetch.output.body.id}",
  "total": "${sum(map(input.items, #.price * #.qty))}",
  "skus": "${map(filter(input.items, #.qty > 0), #.sku)}",
  "static": {"a": 1, "b": [true, "x"]}
}`

func BenchmarkTemplateEval(b *testing.B) {
	var v any
	if err := json.Unmarshal([]byte(benchTemplate), &v); err != nil {
		b.Fatal(err)
	}
	r := refs{nodes: map[string]bool{}, signals: map[string]bool{}}
	tmpl, err := compileTemplate(v, &r)
	if err != nil {
		b.Fatal(err)
	}
	s := benchScope()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tmpl.Eval(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConditionEval(b *testing.B) {
	r := refs{nodes: map[string]bool{}, signals: map[string]bool{}}
	e, err := compileExpr(`nodes.greet.output.status == 200 && input.n > 2 && "b" in input.tags`, &r)
	if err != nil {
		b.Fatal(err)
	}
	s := benchScope()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.Eval(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTemplateCompile(b *testing.B) {
	var v any
	if err := json.Unmarshal([]byte(benchTemplate), &v); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := refs{nodes: map[string]bool{}, signals: map[string]bool{}}
		if _, err := compileTemplate(v, &r); err != nil {
			b.Fatal(err)
		}
	}
}
