package flow

// Bounded expressions
//
// Expressions (github.com/expr-lang/expr) run inside Temporal workflow code, in the
// service's process, beside every other tenant. expr's VM cannot be interrupted, so the
// bound is by construction: before an evaluation does any work or allocation that is
// not O(1), it pays for it from a per-evaluation budget (Limits: steps, bytes, output,
// depth), and fails with a LimitError when the budget is spent. Evaluation is
// synchronous: when it fails, nothing keeps running.
//
// Why the bound holds for any expression (argued over expr v1.17.8's compiler and VM):
//
//   - The only backward jump in expr bytecode is the loop of a predicate builtin (map,
//     filter, all, reduce, ...), which runs its body once per element of a collection
//     fixed before the loop starts. compileExpr rewrites the collection argument c of
//     every such builtin into `bound loop($env, c, K, B)`, which charges len(c)*K steps
//     and len(c)*B bytes before the loop starts, where K is the body's node count (plus
//     the loop's own per-element work) and B what the body and the builtin allocate per
//     element (array and map literals, result slots). Outside loops each node runs at
//     most once. So the number of VM instructions executed is bounded by a constant
//     times the steps charged plus the program size, and each of them is O(1) except
//     those below.
//   - Every operation whose cost depends on the size of its operands is rewritten into
//     a call of a budgeted function ("bound <name>", a name the lexer cannot produce, so
//     tenants cannot call them) that charges for the sizes it is given and then calls
//     expr's own implementation, so behaviour stays the same: + on strings (bytes of the
//     result), == != on strings, arrays, maps (a walk of the operand), < > <= >= on
//     strings, in, contains, startsWith, endsWith, matches (input length times program
//     size; patterns are limited in size, constant ones when the definition is parsed),
//     .. (8 bytes an element), computed keys of member access and map literals (hashing),
//     and every builtin that is not O(1) (repeat, join, split, replace, upper, toJSON,
//     fromJSON, string, sort, uniq, flatten, ...). Each computes the size of its result
//     from its arguments and refuses before allocating. sum becomes a reduce with a
//     budgeted +, sortBy a map to [item, key] pairs sorted by a budgeted comparison.
//   - Builtins left alone are O(1): len, type, abs, ceil, floor, round, first, last,
//     take, bit*. A builtin that is in none of these lists is refused at compile time, so
//     a newer expr cannot add an unbounded one silently.
//   - expr's optimizer is off: what runs is exactly the rewritten tree (it would also
//     fuse loops after they are charged, and its constant folding of "a" + "b" + ...
//     copies the prefix at each step: 1.9 GB to compile a 2 MB expression, measured).
//     Constant `matches` patterns are measured before expr's checker compiles them.
//   - Values can share structure (let a = [x, x]; [a, a] ...), so a value's tree can be
//     exponentially larger than the memory it uses. Every operation that walks a value
//     (==, in, toJSON, string, flatten, the result check) walks it as a tree, charging
//     a step per element and stopping at Limits.Depth, so sharing cannot multiply work.
//   - The result of an evaluation is walked the same way and refused above
//     Limits.Output bytes of JSON, before anything serializes it.
//
// Measured worst cases are in bound_test.go (TestHostileExpressions, TestWorstCases):
// at most about 25 ns per step, so an evaluation within DefaultLimits runs at most about
// 25-30 ms; hostile expressions are refused in well under that, most before any work.
// The VM's own garbage (boxed values, argument slices) is not charged; it is at most
// about 20 bytes per step.
//
// expr's own guards do not bound it: vm.MemoryBudget counts only ranges, array and map
// literals (not strings, not work), and repeat's cap of a million repetitions still
// allows 40 GB. github.com/google/cel-go was weighed: it has runtime cost limits and
// interrupt checks built in, but its syntax is not expr's (size() for len(), x.map(v,
// e) macros, no .., #, let, or most of expr's builtins), so every definition and SPEC
// section 4 would change. Since expr can be bounded soundly, the contract stays. The
// price is that this bound is argued over expr v1.17.8's internals: upgrading expr means
// reading its compiler and VM again. TestEveryBuiltinIsBounded catches new builtins and
// TestBoundedExpressionsBehaveAsBefore changed behaviour; new opcodes need a reader.

import (
	"fmt"
	"reflect"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	exprparser "github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/parser/lexer"
	"github.com/expr-lang/expr/vm"
)

// boundPrefix starts the names of the budgeted functions. Identifiers cannot contain a
// space, so only compileExpr's rewriting can call them.
const boundPrefix = "bound "

var scopeType = reflect.TypeOf(Scope{})

// cheapBuiltins are O(1) in the size of their arguments and run as they are.
var cheapBuiltins = map[string]bool{
	"len": true, "type": true, "abs": true, "ceil": true, "floor": true, "round": true,
	"first": true, "last": true, "take": true,
	"bitand": true, "bitor": true, "bitxor": true, "bitnand": true, "bitshl": true,
	"bitshr": true, "bitushr": true, "bitnot": true,
}

// loopBuiltins run their predicate once per element; per is the work of the loop itself
// per element in steps, and the bytes it keeps per element.
var loopBuiltins = map[string]struct{ steps, bytes int64 }{
	"all": {2, 0}, "none": {2, 0}, "any": {2, 0}, "one": {2, 0},
	// The VM keeps map's and filter's results on its stack (which grows by doubling),
	// then copies them into the array: 56 bytes an element.
	"filter": {3, 56}, "map": {2, 56}, "count": {2, 0},
	"find": {2, 0}, "findIndex": {2, 0}, "findLast": {3, 0}, "findLastIndex": {3, 0},
	"groupBy": {3, 128}, "reduce": {2, 0},
	// sum and sortBy are rewritten into reduce and map before they are charged.
}

// cost charges for a builtin's arguments before it runs.
type costFunc func(b *budget, args []any) error

// budgetedBuiltins charge for a builtin and then run expr's own implementation.
var budgetedBuiltins = map[string]costFunc{
	"int":         parseCost,
	"float":       parseCost,
	"string":      stringCost,
	"trim":        trimCost,
	"trimPrefix":  affixCost,
	"trimSuffix":  affixCost,
	"upper":       caseCost,
	"lower":       caseCost,
	"split":       splitCost,
	"splitAfter":  splitCost,
	"replace":     replaceCost,
	"repeat":      repeatCost,
	"join":        joinCost,
	"indexOf":     searchCost,
	"lastIndexOf": searchCost,
	"hasPrefix":   searchCost,
	"hasSuffix":   searchCost,
	"max":         aggregateCost,
	"min":         aggregateCost,
	"mean":        aggregateCost,
	"median":      medianCost,
	"toJSON":      toJSONCost,
	"fromJSON":    fromJSONCost,
	"toBase64":    base64Cost,
	"fromBase64":  base64Cost,
	"duration":    parseCost,
	"date":        dateCost,
	"timezone":    timezoneCost,
	"get":         getCost,
	"fromPairs":   fromPairsCost,
	"reverse":     copyCost,
	"concat":      concatCost,
	"flatten":     flattenCost,
}

// ownBuiltins replace expr's implementation (same results, charged as they go).
var ownBuiltins = map[string]func(b *budget, args []any) (any, error){
	"sort":    boundedSort,
	"uniq":    boundedUniq,
	"keys":    boundedKeys,
	"values":  boundedValues,
	"toPairs": boundedPairs,
}

// exprConfig is the configuration every expression is compiled with. Expressions are
// deterministic under Temporal replay: no wall clock, a fixed time zone, map iteration
// in sorted key order.
func exprConfig(r *refs) *conf.Config {
	c := conf.CreateNew()
	for _, op := range []expr.Option{
		expr.Env(Scope{}),
		expr.DisableBuiltin("now"),
		expr.Timezone("UTC"),
		expr.Function("keys", sortedKeys),
		expr.Function("values", sortedValues),
		expr.Function("toPairs", sortedPairs),
		expr.MaxNodes(5000),
		expr.Optimize(false),
		expr.Patch(&refCollector{refs: r}),
	} {
		op(c)
	}
	for name := range c.Disabled {
		delete(c.Builtins, name)
	}
	for name, f := range boundFunctions {
		c.Functions[name] = f
	}
	return c
}

// quoted is an expression as an error message shows it: quoted, and cut after 200
// bytes (an expression may be most of a 1 MiB definition).
func quoted(source string) string {
	const show = 200
	if len(source) <= show {
		return strconv.Quote(source)
	}
	cut := show
	for cut > 0 && !utf8.RuneStart(source[cut]) {
		cut--
	}
	return strconv.Quote(source[:cut]) + fmt.Sprintf("... (%d bytes)", len(source))
}

// maxNesting bounds how deep an expression's tree may be before it is parsed.
const maxNesting = 1000

// checkNesting refuses an expression whose tree could be deeper than maxNesting,
// before expr's parser, checker and compiler recurse over it: code nested deeply
// enough ends the process with a Go stack overflow, which no recover catches. It
// counts with expr's own lexer (which loops, and knows strings and comments): every
// open bracket, and in each bracket every operator and every closed bracket since the
// last comma (a chain, `a.b.c`, `1 + 1 + 1` or `a[0][0]`, makes a tree as deep as it is
// long; the items of a list or a map do not nest).
func checkNesting(source string) error {
	lex := lexer.New()
	lex.Reset(file.NewSource(source))
	segments := []int{0} // per open bracket (the whole expression first): its chain since the last comma
	depth := 0           // open brackets and the sum of segments
	for {
		t, err := lex.Next()
		if err != nil {
			return nil // the end, or what the parser reports from the same lexer
		}
		last := len(segments) - 1
		switch {
		case t.Kind == lexer.Bracket && strings.ContainsAny(t.Value, "([{"):
			segments = append(segments, 0)
			depth++
		case t.Kind == lexer.Bracket:
			if last == 0 {
				continue // unbalanced: the parser says so
			}
			depth -= 1 + segments[last]
			segments = segments[:last]
			segments[last-1]++ // the group is a link of its bracket's chain
			depth++
		case t.Kind == lexer.Operator && t.Value == ",":
			depth -= segments[last]
			segments[last] = 0
		case t.Kind == lexer.Operator && t.Value != ":":
			segments[last]++
			depth++
		}
		if depth > maxNesting {
			return fmt.Errorf("it nests too deeply: more than %d brackets, operators and chained groups deep", maxNesting)
		}
	}
}

func compileExpr(source string, r *refs) (e *Expr, err error) {
	bad := func(err error) (*Expr, error) {
		return nil, fmt.Errorf("bad expression %s: %s", quoted(source), oneLine(err.Error()))
	}
	defer func() {
		// expr's checker and compiler, and the rewriting, assume well-typed trees; a
		// panic on a tree they did not foresee refuses the expression, not the process.
		if p := recover(); p != nil {
			e, err = nil, fmt.Errorf("bad expression %s: %v", quoted(source), p)
		}
	}()
	if err := checkNesting(source); err != nil {
		return bad(err)
	}
	config := exprConfig(r)
	tree, err := exprparser.ParseWithConfig(source, config)
	if err != nil {
		return bad(err)
	}
	if err := bindLoopVariables(tree, r); err != nil {
		return bad(err)
	}
	// Constant patterns are compiled by the checker: refuse big ones first.
	if err := checkPatterns(tree, DefaultLimits.RegexpInsts); err != nil {
		return bad(err)
	}
	known := len(r.unknown)
	if _, err := new(checker.Checker).PatchAndCheck(tree, config); err != nil {
		return bad(err)
	}
	if len(r.unknown) > known {
		return bad(fmt.Errorf("workflow has no field %q (it has %s)", r.unknown[known], strings.Join(workflowFields, ", ")))
	}
	rw := &rewriter{size: map[ast.Node]int64{}}
	ast.Walk(&tree.Node, rw)
	if rw.err != nil {
		return bad(rw.err)
	}
	if _, err := checker.Check(tree, config); err != nil {
		return nil, fmt.Errorf("expression %s: internal error bounding it: %s", quoted(source), oneLine(err.Error()))
	}
	program, err := compiler.Compile(tree, config)
	if err != nil {
		return nil, fmt.Errorf("expression %s: internal error compiling it: %s", quoted(source), oneLine(err.Error()))
	}
	return &Expr{source: source, program: program, cost: rw.nodes(tree.Node), bytes: literalBytes(tree.Node)}, nil
}

// machines are VMs to reuse (a third less allocated by a typical template). A VM keeps
// its stack, its variables and the loop scopes it grew, at most what one evaluation's
// budget allows; one with a big stack is dropped, and sync.Pool drops the others at GC.
var machines = sync.Pool{New: func() any { return new(vm.VM) }}

// run evaluates the expression, charging b.
func (e *Expr) run(s Scope, b *budget) (any, error) {
	if err := b.step(e.cost, "expression"); err != nil {
		return nil, err
	}
	if err := b.alloc(e.bytes, "expression"); err != nil {
		return nil, err
	}
	s.budget = b
	machine := machines.Get().(*vm.VM)
	out, err := machine.Run(e.program, s)
	if cap(machine.Stack) <= 1024 {
		clear(machine.Variables) // references into this evaluation's values
		clear(machine.Stack[:cap(machine.Stack)])
		machines.Put(machine)
	}
	if err != nil {
		return nil, &evalError{source: e.source, err: err}
	}
	return out, nil
}

// evalError is a failed evaluation; it unwraps to the LimitError if that was the cause.
type evalError struct {
	source string
	err    error
}

func (e *evalError) Error() string {
	return fmt.Sprintf("evaluate %s: %s", quoted(e.source), oneLine(e.err.Error()))
}

func (e *evalError) Unwrap() error { return e.err }

// rewriter is the ast.Visitor that makes every non-O(1) operation pay (see the top of
// this file). ast.Walk visits children first, so a node's arguments are already
// rewritten when it is.
type rewriter struct {
	err  error
	size map[ast.Node]int64 // node counts, memoized
}

func (rw *rewriter) fail(format string, args ...any) {
	if rw.err == nil {
		rw.err = fmt.Errorf(format, args...)
	}
}

func env() ast.Node { return &ast.IdentifierNode{Value: "$env"} }

func call(at ast.Node, name string, args ...ast.Node) *ast.CallNode {
	c := &ast.CallNode{
		Callee:    &ast.IdentifierNode{Value: boundPrefix + name},
		Arguments: append([]ast.Node{env()}, args...),
	}
	c.SetLocation(at.Location())
	c.Callee.SetLocation(at.Location())
	return c
}

func (rw *rewriter) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BinaryNode:
		rw.binary(node, n)
	case *ast.MemberNode:
		if !isLiteralKey(n.Property) && !isNumberOrBool(n.Property) {
			n.Property = call(n.Property, "key", n.Property)
		}
	case *ast.PairNode:
		if !isLiteralKey(n.Key) {
			n.Key = call(n.Key, "key", n.Key)
		}
	case *ast.BuiltinNode:
		rw.builtin(node, n)
	case *ast.VariableDeclaratorNode:
		if n.Name == "$env" {
			// The budgeted functions find the evaluation's budget in $env.
			rw.fail("$env cannot be redefined")
		}
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok {
			switch id.Value {
			case "keys", "values", "toPairs":
				ast.Patch(node, call(n, id.Value, n.Arguments...))
				return
			}
			if strings.HasPrefix(id.Value, boundPrefix) {
				return
			}
		}
		// A method of a value (time.Time's Format, ...), called by reflection: it pays
		// methodSteps, and its arguments for their size (the result is at most a few
		// times that).
		if m, ok := n.Callee.(*ast.MemberNode); ok {
			m.Node = call(m.Node, "method", m.Node)
		} else {
			n.Callee = call(n.Callee, "method", n.Callee) // let f = t.Format; f(...)
		}
		for i, a := range n.Arguments {
			if !isNumberOrBool(a) {
				n.Arguments[i] = call(a, "arg", a)
			}
		}
	}
}

func isLiteralKey(n ast.Node) bool {
	switch n.(type) {
	case *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.NilNode:
		return true
	}
	return false
}

func isScalarLiteral(n ast.Node) bool {
	return isLiteralKey(n)
}

func kindOf(n ast.Node) reflect.Kind {
	t := n.Type()
	if t == nil {
		return reflect.Interface
	}
	return t.Kind()
}

func isNumberOrBool(n ast.Node) bool {
	switch kindOf(n) {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.Bool:
		return true
	}
	return false
}

func (rw *rewriter) binary(node *ast.Node, n *ast.BinaryNode) {
	switch n.Operator {
	case "+":
		if isNumberOrBool(n.Left) && isNumberOrBool(n.Right) {
			return
		}
		ast.Patch(node, call(n, "add", n.Left, n.Right))
	case "==", "!=":
		// Comparing with a scalar literal, or with a number or bool, is O(1) or
		// O(literal).
		if isScalarLiteral(n.Left) || isScalarLiteral(n.Right) || isNumberOrBool(n.Left) || isNumberOrBool(n.Right) {
			return
		}
		name := "eq"
		if n.Operator == "!=" {
			name = "ne"
		}
		ast.Patch(node, call(n, name, n.Left, n.Right))
	case "<", ">", "<=", ">=":
		if isScalarLiteral(n.Left) || isScalarLiteral(n.Right) || isNumberOrBool(n.Left) || isNumberOrBool(n.Right) {
			return
		}
		ast.Patch(node, call(n, n.Operator, n.Left, n.Right))
	case "in":
		ast.Patch(node, call(n, "in", n.Left, n.Right))
	case "contains", "startsWith", "endsWith":
		ast.Patch(node, call(n, n.Operator, n.Left, n.Right))
	case "matches":
		right := n.Right
		if s, ok := right.(*ast.StringNode); ok {
			re, err := compilePattern(s.Value, DefaultLimits.RegexpInsts)
			if err != nil {
				rw.fail("%s", err)
				return
			}
			c := &ast.ConstantNode{Value: re}
			c.SetLocation(s.Location())
			right = c
		}
		ast.Patch(node, call(n, "matches", n.Left, right))
	case "..":
		ast.Patch(node, call(n, "range", n.Left, n.Right))
	}
}

func (rw *rewriter) builtin(node *ast.Node, n *ast.BuiltinNode) {
	switch {
	case cheapBuiltins[n.Name]:
		return
	case n.Name == "sum":
		rw.sum(node, n)
		return
	case n.Name == "sortBy":
		rw.sortBy(node, n)
		return
	}
	if per, ok := loopBuiltins[n.Name]; ok {
		if n.Name == "groupBy" {
			// The keys are hashed.
			p, ok := n.Arguments[1].(*ast.PredicateNode)
			if !ok {
				rw.fail("groupBy needs a predicate")
				return
			}
			p.Node = call(p.Node, "key", p.Node)
		}
		var body []ast.Node
		if len(n.Arguments) > 1 {
			body = n.Arguments[1:2]
		}
		n.Arguments[0] = rw.loop(n.Arguments[0], per.steps, per.bytes, body...)
		return
	}
	if _, ok := budgetedBuiltins[n.Name]; ok {
		ast.Patch(node, call(n, n.Name, n.Arguments...))
		return
	}
	if _, ok := ownBuiltins[n.Name]; ok {
		ast.Patch(node, call(n, n.Name, n.Arguments...))
		return
	}
	rw.fail("builtin %s is not available in workflow expressions", n.Name)
}

// loop wraps the collection of a loop whose body is body.
func (rw *rewriter) loop(collection ast.Node, steps, bytes int64, body ...ast.Node) ast.Node {
	for _, b := range body {
		steps += rw.nodes(b)
		bytes += literalBytes(b)
	}
	k := &ast.IntegerNode{Value: int(steps)}
	m := &ast.IntegerNode{Value: int(bytes)}
	return call(collection, "loop", collection, k, m)
}

// sum(c) and sum(c, p) become reduce(c, a + #, 0) and reduce(c, a + p, 0) with a
// budgeted +: sum of strings concatenates them.
func (rw *rewriter) sum(node *ast.Node, n *ast.BuiltinNode) {
	var item ast.Node = &ast.PointerNode{}
	if len(n.Arguments) == 2 {
		p, ok := n.Arguments[1].(*ast.PredicateNode)
		if !ok {
			rw.fail("sum needs a predicate")
			return
		}
		item = p.Node
	}
	body := &ast.PredicateNode{Node: call(n, "add", &ast.PointerNode{Name: "acc"}, item)}
	body.SetLocation(n.Location())
	zero := &ast.IntegerNode{Value: 0}
	zero.SetLocation(n.Location())
	r := &ast.BuiltinNode{Name: "reduce", Arguments: []ast.Node{
		rw.loop(n.Arguments[0], loopBuiltins["reduce"].steps, 0, body), body, zero,
	}}
	ast.Patch(node, r)
}

// sortBy(c, key[, order]) becomes bound sortBy(map(c, [#, key])[, order]): the keys are
// computed by a charged loop and sorted by a charged comparison.
func (rw *rewriter) sortBy(node *ast.Node, n *ast.BuiltinNode) {
	key, ok := n.Arguments[1].(*ast.PredicateNode)
	if !ok {
		rw.fail("sortBy needs a predicate")
		return
	}
	pair := &ast.ArrayNode{Nodes: []ast.Node{&ast.PointerNode{}, key.Node}}
	pair.SetLocation(key.Location())
	body := &ast.PredicateNode{Node: pair}
	body.SetLocation(key.Location())
	pairs := &ast.BuiltinNode{Name: "map", Arguments: []ast.Node{
		rw.loop(n.Arguments[0], loopBuiltins["map"].steps, loopBuiltins["map"].bytes, body), body,
	}}
	pairs.SetLocation(n.Location())
	args := []ast.Node{pairs}
	if len(n.Arguments) == 3 {
		args = append(args, n.Arguments[2])
	}
	ast.Patch(node, call(n, "sortBy", args...))
}

// nodes counts the nodes of n (memoized: loops nest).
func (rw *rewriter) nodes(n ast.Node) int64 {
	if n == nil {
		return 0
	}
	if c, ok := rw.size[n]; ok {
		return c
	}
	var c int64 = 1
	for _, child := range children(n) {
		c += rw.nodes(child)
	}
	if s, ok := n.(*ast.StringNode); ok {
		c += fastSteps(int64(len(s.Value))) // hashed or compared as keys
	}
	rw.size[n] = c
	return c
}

// literalBytes is what the array and map literals of n allocate each time n runs.
func literalBytes(n ast.Node) int64 {
	var b int64
	switch n := n.(type) {
	case *ast.ArrayNode:
		b = 24 + 16*int64(len(n.Nodes))
	case *ast.MapNode:
		b = 64 + 96*int64(len(n.Pairs))
	}
	for _, child := range children(n) {
		b += literalBytes(child)
	}
	return b
}

func children(n ast.Node) []ast.Node {
	switch n := n.(type) {
	case *ast.UnaryNode:
		return []ast.Node{n.Node}
	case *ast.BinaryNode:
		return []ast.Node{n.Left, n.Right}
	case *ast.ChainNode:
		return []ast.Node{n.Node}
	case *ast.MemberNode:
		return []ast.Node{n.Node, n.Property}
	case *ast.SliceNode:
		return []ast.Node{n.Node, n.From, n.To}
	case *ast.CallNode:
		return append([]ast.Node{n.Callee}, n.Arguments...)
	case *ast.BuiltinNode:
		return n.Arguments
	case *ast.PredicateNode:
		return []ast.Node{n.Node}
	case *ast.VariableDeclaratorNode:
		return []ast.Node{n.Value, n.Expr}
	case *ast.SequenceNode:
		return n.Nodes
	case *ast.ConditionalNode:
		return []ast.Node{n.Cond, n.Exp1, n.Exp2}
	case *ast.ArrayNode:
		return n.Nodes
	case *ast.MapNode:
		return n.Pairs
	case *ast.PairNode:
		return []ast.Node{n.Key, n.Value}
	}
	return nil
}

// checkPatterns refuses constant `matches` patterns over the size limit before the
// checker compiles them.
func checkPatterns(tree *exprparser.Tree, limit int64) error {
	var err error
	var visit func(n ast.Node)
	visit = func(n ast.Node) {
		if b, ok := n.(*ast.BinaryNode); ok && b.Operator == "matches" {
			if s, ok := b.Right.(*ast.StringNode); ok && err == nil {
				_, err = patternInsts(s.Value, limit)
			}
		}
		for _, c := range children(n) {
			if c != nil {
				visit(c)
			}
		}
	}
	visit(tree.Node)
	return err
}

// boundedRegexp is a compiled pattern and its size in instructions.
type boundedRegexp struct {
	re    *regexp.Regexp
	insts int64
}

// patternInsts estimates the number of instructions of pattern's program, without
// expanding its repetitions, and refuses it above limit.
func patternInsts(pattern string, limit int64) (int64, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 0, err
	}
	n := regexpSize(re)
	if n > limit {
		return n, &LimitError{Limit: "regexp", Max: limit, Op: "matches", Need: n}
	}
	return n, nil
}

func regexpSize(re *syntax.Regexp) int64 {
	var subs int64
	for _, s := range re.Sub {
		subs = add(subs, regexpSize(s))
	}
	switch re.Op {
	case syntax.OpLiteral:
		return int64(len(re.Rune)) + 1
	case syntax.OpRepeat:
		n := int64(re.Max)
		if n < 0 {
			n = int64(re.Min) + 1
		}
		if n < 1 {
			n = 1
		}
		return add(mul(n, subs+1), 1)
	}
	return add(subs, int64(len(re.Sub))+1)
}

func compilePattern(pattern string, limit int64) (*boundedRegexp, error) {
	n, err := patternInsts(pattern, limit)
	if err != nil {
		return nil, err
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, err
	}
	return &boundedRegexp{re: re, insts: n}, nil
}
