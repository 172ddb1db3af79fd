package script

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/go-sourcemap/sourcemap"
	"modernc.org/quickjs"
)

// bundleLines is how many blank lines precede a bundle when it is compiled: engine
// positions past it are the bundle's, those before it the runtime's.
const bundleLines = 100_000

// positions maps positions in a bundle back to the module's source, through the
// source map esbuild made with it.
type positions struct {
	sm *sourcemap.Consumer
}

func newPositions(sourceMap []byte) *positions {
	sm, err := sourcemap.Parse("workflow.js.map", sourceMap)
	if err != nil {
		return &positions{}
	}
	return &positions{sm: sm}
}

// enginePosition is a position in a stack trace of the engine ("<eval>:LINE:COL").
var enginePosition = regexp.MustCompile(`<eval>:(\d+)(?::(\d+))?`)

// source maps an engine position (1-based line and column) to the module's source.
func (p *positions) source(line, col int) (file string, srcLine, srcCol int, ok bool) {
	if p == nil || p.sm == nil || line <= bundleLines {
		return "", 0, 0, false
	}
	file, _, srcLine, srcCol, ok = p.sm.Source(line-bundleLines, max(col-1, 0))
	if !ok || file == "" {
		return "", 0, 0, false
	}
	return file, srcLine, srcCol + 1, true
}

// stack rewrites an engine stack trace with the module's positions; frames of the
// runtime become "@temporalio/workflow".
func (p *positions) stack(s string) string {
	return enginePosition.ReplaceAllStringFunc(s, func(m string) string {
		g := enginePosition.FindStringSubmatch(m)
		line, _ := strconv.Atoi(g[1])
		col, _ := strconv.Atoi(g[2])
		if line <= bundleLines {
			return ModuleName
		}
		if file, l, c, ok := p.source(line, col); ok {
			return fmt.Sprintf("%s:%d:%d", file, l, c)
		}
		return fmt.Sprintf("bundle:%d:%d", line-bundleLines, col)
	})
}

// first is the first frame of a stack trace that is in the module's source.
func (p *positions) first(stack string) (line, col int, ok bool) {
	for _, g := range enginePosition.FindAllStringSubmatch(stack, -1) {
		l, _ := strconv.Atoi(g[1])
		c, _ := strconv.Atoi(g[2])
		if _, sl, sc, ok := p.source(l, c); ok {
			return sl, sc, true
		}
	}
	return 0, 0, false
}

// problem is an error the module's top level threw, at its position in the source.
func (p *Program) problem(err error) Problem {
	pr := Problem{Message: "the module's top level failed: " + err.Error()}
	var qe *quickjs.Error
	if errors.As(err, &qe) {
		if qe.Stack != "" {
			pr.Line, pr.Column, _ = p.positions.first(qe.Stack)
		}
		if pr.Line == 0 && qe.LineNumber > 0 {
			if _, l, c, ok := p.positions.source(qe.LineNumber, qe.ColumnNumber); ok {
				pr.Line, pr.Column = l, c
			}
		}
	}
	return pr
}
