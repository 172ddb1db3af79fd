package flow

import (
	"fmt"
	"slices"

	"github.com/expr-lang/expr/ast"
	exprparser "github.com/expr-lang/expr/parser"
)

// Paths: what a node may reach.
//
// A definition's nodes fall into paths: the main path (what "start" reaches), each
// branch of a parallel node (what the branch's first node reaches) and the body of
// each foreach node (what "body" reaches), following next, then, else, on_timeout,
// cases, default, any and catch, but not entering branches or bodies, which are paths
// of their own. Several nodes of one path may lead to the same node: one path runs one
// node at a time, so that is a join (the join node runs once, after whichever came
// first). A node may not belong to two paths: a parallel branch or a foreach body that
// reached a node of another path would run it concurrently with that path, or once per
// iteration outside the iteration, so that is refused; a branch or body continues its
// parent path through its parallel or foreach node's "next". A path ends at a node
// without a successor; return and fail end the whole run from any path.
//
// The foreach variables ("as" and "index") of the foreach nodes whose bodies enclose a
// node are in scope in its expressions; the names of nested foreach nodes must differ.
// continue_as_new is allowed on the main path only (a new run cannot start from the
// middle of a branch or an iteration).

type path struct {
	entry string
	desc  string
	vars  []string
	main  bool
	body  bool // of a foreach
}

// regions assigns each node reachable from start to one path, marks the nodes of the
// main path, and returns the foreach variables in scope of each node.
func (p *parser) regions(def *Definition) map[string][]string {
	if def.Start == "" {
		return nil
	}
	owner := map[string]int{}
	scopes := map[string][]string{}
	reported := map[string]bool{}
	paths := []path{{entry: def.Start, desc: "the main path", main: true}}
	for i := 0; i < len(paths); i++ {
		pa := paths[i]
		stack := []string{pa.entry}
		for len(stack) > 0 {
			id := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			n := def.Nodes[id]
			if n == nil {
				continue // a dangling reference or a node that did not parse: reported
			}
			if o, ok := owner[id]; ok {
				// Pinned definitions predate foreach: their branches may share nodes.
				lenient := p.pinned && !paths[o].body && !pa.body
				if o != i && !reported[id] && !lenient {
					reported[id] = true
					p.problem(KindStructure, id, "", "is reached from %s and from %s: a parallel branch or a foreach body cannot share nodes with another path (continue after the parallel or foreach with its \"next\")",
						paths[o].desc, pa.desc)
				}
				continue
			}
			owner[id] = i
			scopes[id] = pa.vars
			n.Main = pa.main
			edges := n.edges()
			for j := len(edges) - 1; j >= 0; j-- {
				stack = append(stack, edges[j].target)
			}
			switch n.Type {
			case TypeParallel:
				for _, b := range n.Branches {
					paths = append(paths, path{entry: b, desc: fmt.Sprintf("branch %q of parallel %q", b, id), vars: pa.vars})
				}
			case TypeForeach:
				for _, v := range []string{n.As, n.Index} {
					if slices.Contains(pa.vars, v) {
						p.problem(KindStructure, id, "", "%q is already a variable of an enclosing foreach: name this one differently", v)
					}
				}
				if n.Body != "" {
					vars := append(slices.Clone(pa.vars), n.As, n.Index)
					paths = append(paths, path{entry: n.Body, desc: fmt.Sprintf("the body of foreach %q", id), vars: vars, body: true})
				}
			case TypeContinueAsNew:
				if !pa.main {
					p.problem(KindStructure, id, "", "continue_as_new is allowed on the main path only, not in %s", pa.desc)
				}
			}
		}
	}
	return scopes
}

// loopField is the Scope field that holds the foreach variables. Its name has a space,
// which identifiers cannot, so tenants reach it only through their variables' names.
const loopField = "foreach variables"

// bindLoopVariables rewrites each identifier naming a foreach variable in scope into
// a read of the variable from Scope.Loop, before the expression is checked.
func bindLoopVariables(tree *exprparser.Tree, r *refs) error {
	if len(r.loop) == 0 {
		return nil
	}
	b := &loopBinder{vars: r.loop}
	ast.Walk(&tree.Node, b)
	return b.err
}

type loopBinder struct {
	vars []string
	err  error
}

func (b *loopBinder) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if !slices.Contains(b.vars, n.Value) {
			return
		}
		m := &ast.MemberNode{Node: &ast.IdentifierNode{Value: loopField}, Property: &ast.StringNode{Value: n.Value}}
		m.SetLocation(n.Location())
		m.Node.SetLocation(n.Location())
		m.Property.SetLocation(n.Location())
		ast.Patch(node, m)
	case *ast.VariableDeclaratorNode:
		if slices.Contains(b.vars, n.Name) && b.err == nil {
			b.err = fmt.Errorf("let %s: %s is a foreach variable here; choose another name", n.Name, n.Name)
		}
	}
}
