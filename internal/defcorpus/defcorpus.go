// Package defcorpus finds the workflow definitions the repository's tests use, valid
// and invalid, so that tests can hold the JSON Schema, Parse and `reconciler validate`
// to agree on all of them. A definition is a string in a _test.go file (a literal, or
// a sum of literals and other expressions, which count as "x") that is a JSON object
// with a "nodes" member or with "start" and "version", or that fails to decode but
// mentions "version" and "nodes" (broken on purpose).
package defcorpus

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Definition is one definition found, and where.
type Definition struct {
	Where string // file:line
	Code  string
}

// Find returns the definitions in the _test.go files under each of dirs (relative to
// the module root).
func Find(dirs ...string) ([]Definition, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []Definition
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
				return nil
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			ast.Inspect(f, func(n ast.Node) bool {
				e, ok := n.(ast.Expr)
				if !ok {
					return true
				}
				s, ok := stringValue(e)
				if !ok {
					return true
				}
				if isDefinition(s) && !seen[s] {
					seen[s] = true
					out = append(out, Definition{Where: fmt.Sprintf("%s:%d", rel, fset.Position(e.Pos()).Line), Code: s})
				}
				_, isSum := e.(*ast.BinaryExpr)
				return !isSum // the parts of a sum are not definitions of their own
			})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Where < out[j].Where })
	return out, nil
}

// stringValue evaluates a string literal or a sum with at least one string literal.
func stringValue(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		l, lok := stringValue(e.X)
		r, rok := stringValue(e.Y)
		if !lok && !rok {
			return "", false
		}
		if !lok {
			l = "x"
		}
		if !rok {
			r = "x"
		}
		return l + r, true
	case *ast.ParenExpr:
		return stringValue(e.X)
	}
	return "", false
}

func isDefinition(s string) bool {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "{") {
		return false
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &top); err != nil {
		return strings.Contains(s, `"version"`) && strings.Contains(s, `"nodes"`) // broken on purpose
	}
	_, nodes := top["nodes"]
	_, start := top["start"]
	_, version := top["version"]
	return nodes || (start && version)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above %s", dir)
		}
		dir = parent
	}
}
