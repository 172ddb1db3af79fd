package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/flowbuilder/reconciler/reconciler/flow"
	"github.com/flowbuilder/reconciler/reconciler/script"
)

// validate is `reconciler validate FILE...`: it checks compiled workflow definitions
// (and .ts / .js workflow modules, compiled as a worker compiles them) offline with the
// parser the workers run (any activity and child workflow name is
// accepted: the catalog is the project's). It prints every problem with its node id
// and returns an error when there is one.
func validate(files []string, out io.Writer) error {
	if len(files) == 0 {
		return usageError{errors.New("usage: reconciler validate FILE...")}
	}
	bad := 0
	for _, file := range files {
		problems, err := validateFile(file)
		if err != nil {
			fmt.Fprintf(out, "%s: %s\n", file, err)
			bad++
			continue
		}
		if len(problems) == 0 {
			fmt.Fprintf(out, "%s: valid\n", file)
			continue
		}
		bad++
		for _, p := range problems {
			where := "definition"
			if script.Is(languageOf(file)) {
				where = "module"
			}
			if p.Node != "" {
				where = fmt.Sprintf("node %q", p.Node)
			}
			if p.Field != "" {
				where += " (" + p.Field + ")"
			}
			fmt.Fprintf(out, "%s: %s: %s\n", file, where, p.Message)
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d files are not valid", bad, len(files))
	}
	return nil
}

// validators check a file by its extension; anything else is a JSON definition.
var validators = map[string]func(code []byte) ([]flow.Problem, error){
	".ts":  moduleValidator(script.TypeScript),
	".mts": moduleValidator(script.TypeScript),
	".js":  moduleValidator(script.JavaScript),
	".mjs": moduleValidator(script.JavaScript),
}

// moduleValidator checks a TypeScript or JavaScript workflow module as a worker
// compiles it; a problem's message starts with its line and column.
func moduleValidator(language string) func(code []byte) ([]flow.Problem, error) {
	return func(code []byte) ([]flow.Problem, error) {
		var out []flow.Problem
		for _, p := range script.Check(string(code), language) {
			out = append(out, flow.Problem{Message: p.String()})
		}
		return out, nil
	}
}

func validateFile(file string) ([]flow.Problem, error) {
	code, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if v, ok := validators[strings.ToLower(filepath.Ext(file))]; ok {
		return v(code)
	}
	_, err = flow.Parse(code, flow.Catalog{})
	var ve *flow.ValidationError
	if errors.As(err, &ve) {
		return ve.Problems, nil
	}
	return nil, err
}

// languageOf is the language a file is checked as, by its extension.
func languageOf(file string) string {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".ts", ".mts":
		return script.TypeScript
	case ".js", ".mjs":
		return script.JavaScript
	}
	return "json"
}
