package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowbuilder/reconciler/internal/defcorpus"
	"github.com/flowbuilder/reconciler/reconciler/flow"
)

// `reconciler validate` and the JSON Schema agree on every definition the tests use:
// the command prints every problem Parse finds, with its node id, and exits non-zero
// when there is one; what the schema refuses, the command refuses with a problem the
// schema checks; what the schema accepts, the command refuses only for what a schema
// cannot express (references, expressions, paths).
func TestValidateAgreesWithTheSchema(t *testing.T) {
	t.Parallel()
	defs, err := defcorpus.Find("reconciler", "cmd")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(flow.Schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	files := make([]string, len(defs))
	for i, d := range defs {
		files[i] = filepath.Join(dir, fmt.Sprintf("def%03d.json", i))
		if err := os.WriteFile(files[i], []byte(d.Code), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := command(t, ctx, nil, append([]string{"validate"}, files...)...).CombinedOutput()
	lines := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		file, rest, ok := strings.Cut(line, ": ")
		if ok {
			lines[file] = append(lines[file], rest)
		}
	}

	invalid := 0
	for i, d := range defs {
		v, jerr := jsonschema.UnmarshalJSON(strings.NewReader(d.Code))
		schemaOK := jerr == nil && schema.Validate(v) == nil
		_, perr := flow.Parse([]byte(d.Code), flow.Catalog{})
		var ve *flow.ValidationError
		errors.As(perr, &ve)
		shapes := 0
		var want []string
		if ve != nil {
			invalid++
			for _, p := range ve.Problems {
				if p.Kind == flow.KindShape {
					shapes++
				}
				where := "definition"
				if p.Node != "" {
					where = fmt.Sprintf("node %q", p.Node)
				}
				if p.Field != "" {
					where += " (" + p.Field + ")"
				}
				want = append(want, where+": "+p.Message)
			}
		} else {
			want = []string{"valid"}
		}
		if got := lines[files[i]]; strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: validate printed %q, want %q", d.Where, got, want)
		}
		if schemaOK && shapes > 0 || !schemaOK && shapes == 0 {
			t.Errorf("%s: the schema accepts it: %v; validate finds %d problems the schema checks (%v)\n%s", d.Where, schemaOK, shapes, perr, d.Code)
		}
	}
	if invalid == 0 || exitCode(err) != 1 {
		t.Errorf("%d invalid definitions, exit code %d (%v), want 1", invalid, exitCode(err), err)
	}
	t.Logf("%d definitions, %d invalid", len(defs), invalid)
}
