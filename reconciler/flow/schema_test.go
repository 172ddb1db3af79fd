package flow

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowbuilder/reconciler/internal/defcorpus"
)

// compiledSchema is schema.json, compiled for draft 2020-12.
func compiledSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// schemaAccepts validates code against the schema; non-JSON is refused.
func schemaAccepts(s *jsonschema.Schema, code string) (bool, error) {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(code))
	if err != nil {
		return false, err
	}
	err = s.Validate(v)
	return err == nil, err
}

// The schema and Parse agree on every definition the tests use: what the schema
// accepts, Parse accepts but for problems the schema cannot express (references,
// expressions, paths, names the catalog knows); what the schema refuses, Parse refuses
// with a problem of the kind the schema checks.
func TestSchemaAgreesWithParse(t *testing.T) {
	s := compiledSchema(t)
	defs, err := defcorpus.Find("reconciler", "cmd")
	if err != nil {
		t.Fatal(err)
	}
	if len(defs) < 100 {
		t.Fatalf("found only %d definitions in the tests", len(defs))
	}
	valid, invalid := 0, 0
	for _, d := range append(defs, extraDefinitions...) {
		ok, verr := schemaAccepts(s, d.Code)
		_, perr := Parse([]byte(d.Code), Catalog{})
		var ve *ValidationError
		errors.As(perr, &ve)
		var shapes []Problem
		if ve != nil {
			for _, p := range ve.Problems {
				if p.Kind == KindShape {
					shapes = append(shapes, p)
				}
			}
		}
		switch {
		case ok && len(shapes) > 0:
			t.Errorf("%s: the schema accepts it, Parse finds %v\n%s", d.Where, shapes, d.Code)
		case !ok && perr == nil:
			t.Errorf("%s: the schema refuses it (%v), Parse accepts it\n%s", d.Where, verr, d.Code)
		case !ok && len(shapes) == 0:
			t.Errorf("%s: the schema refuses it (%v), Parse only for %v\n%s", d.Where, verr, perr, d.Code)
		}
		if perr == nil {
			valid++
		} else {
			invalid++
		}
	}
	t.Logf("%d definitions: %d valid, %d invalid", len(defs)+len(extraDefinitions), valid, invalid)
}

// extraDefinitions are edge cases of the schema's patterns that no other test uses.
var extraDefinitions = func() []defcorpus.Definition {
	var out []defcorpus.Definition
	add := func(node string) {
		out = append(out, defcorpus.Definition{Where: "edge", Code: `{"version": 1, "start": "n", "nodes": {"n": ` + node + `}}`})
	}
	for _, d := range []string{"1h30m", "+5s", ".5s", "1.s", "0", "0s", "-0s", "-1s", "1", "5 s", "1µs", "1d", "99999999999h", ""} {
		add(`{"type": "activity", "activity": "echo", "timeout": "` + d + `"}`)
		add(`{"type": "sleep", "duration": "` + d + `"}`)
		add(`{"type": "activity", "activity": "echo", "retry": {"initial_interval": "` + d + `"}}`)
	}
	for _, u := range []string{"2030-01-02T15:04:05Z", "2030-01-02t15:04:05.5+02:00", "2030-13-02T15:04:05Z", "2030-01-02", "${input.at}", "soon", ""} {
		add(`{"type": "sleep", "until": "` + u + `"}`)
	}
	for _, n := range []string{"3", "3.0", "1e1", "2.5", "-1", `"3"`, "null", "1073741825"} {
		add(`{"type": "activity", "activity": "echo", "retry": {"maximum_attempts": ` + n + `, "backoff_coefficient": ` + n + `}}`)
		add(`{"type": "foreach", "items": [], "as": "x", "body": "n", "concurrency": ` + n + `}`)
	}
	for _, v := range []string{`"item"`, `"index"`, `"len"`, `"_a1"`, `"1a"`, `""`, `null`, `3`} {
		add(`{"type": "foreach", "items": [], "as": ` + v + `, "body": "n"}`)
		add(`{"type": "foreach", "items": [], "as": "it", "index": ` + v + `, "body": "n"}`)
	}
	for _, w := range []string{
		`{"type": "wait_signal", "signal": "a", "on_timeout": null}`,
		`{"type": "wait_signal", "signal": "a", "on_timeout": "n"}`,
		`{"type": "wait_signal", "any": [{"signal": "a"}], "next": null}`,
		`{"type": "wait_signal", "any": [{"signal": "a"}, {"signal": "a"}]}`,
		`{"type": "wait_signal", "signal": null}`,
		`{"type": "wait_signal"}`,
		`{"type": "condition", "if": " \t"}`,
		`{"type": "switch", "cases": [{"next": "n"}]}`,
		`{"type": "switch", "cases": []}`,
		`{"type": "activity", "activity": "echo", "retry": null, "catch": null}`,
		`{"type": "activity", "activity": "echo", "retry": {"non_retryable_errors": [""]}}`,
		`{"type": "parallel", "branches": [""]}`,
		`{"type": "fail", "message": null}`,
		`{"type": "set", "values": null, "label": 3}`,
		`{"type": "continue_as_new"}`,
	} {
		add(w)
	}
	out = append(out,
		defcorpus.Definition{Where: "edge", Code: `{"version": 1.0, "start": "n", "nodes": {"n": {"type": "return"}}}`},
		defcorpus.Definition{Where: "edge", Code: `{"version": 1, "start": "n", "timeout": null, "nodes": {"n": {"type": "return"}}}`},
		defcorpus.Definition{Where: "edge", Code: `null`},
		defcorpus.Definition{Where: "edge", Code: `[]`},
	)
	return out
}()

// The schema's lists are the parser's: its node types and their fields, the names a
// foreach variable cannot take, the duration and time patterns.
func TestSchemaListsAreTheParsers(t *testing.T) {
	var doc struct {
		Defs map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
			Pattern    string                     `json:"pattern"`
			Not        struct {
				Enum    []string `json:"enum"`
				Pattern string   `json:"pattern"`
			} `json:"not"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(Schema, &doc); err != nil {
		t.Fatal(err)
	}
	for typ, fields := range fieldsOf {
		def, ok := doc.Defs[typ]
		if !ok {
			t.Errorf("no $defs/%s", typ)
			continue
		}
		want := slices.Sorted(slices.Values(append(slices.Clone(fields), commonFields...)))
		if got := slices.Sorted(maps.Keys(def.Properties)); !slices.Equal(got, want) {
			t.Errorf("$defs/%s has %v, Parse allows %v", typ, got, want)
		}
	}
	if got, want := slices.Sorted(slices.Values(doc.Defs["variable"].Not.Enum)), slices.Sorted(maps.Keys(reserved)); !slices.Equal(got, want) {
		t.Errorf("reserved names: schema %v, Parse %v", got, want)
	}
	if d := doc.Defs["positiveDuration"]; d.Pattern != DurationPattern || d.Not.Pattern != ZeroDurationPattern {
		t.Errorf("positiveDuration patterns %q, %q", d.Pattern, d.Not.Pattern)
	}
	if d := doc.Defs["duration"]; d.Pattern != DurationPattern {
		t.Errorf("duration pattern %q", d.Pattern)
	}
	if !strings.Contains(string(Schema), strings.ReplaceAll(TimePattern, `\`, `\\`)) {
		t.Error("the time pattern is not the schema's")
	}
}
