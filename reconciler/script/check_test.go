package script

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Check reports what the builder must fix, with positions in the source.
func TestCheck(t *testing.T) {
	cases := []struct {
		name, lang, src string
		want            string // substring of the problems; "" when valid
		line, col       int
	}{
		{"valid default export", TypeScript, `import { sleep } from '@temporalio/workflow';
export default async function greet(name: string): Promise<string> { await sleep('1s'); return 'Hello, ' + name }`, "", 0, 0},
		{"the only exported function", JavaScript, `export const x = 1; export async function wf() { return x }`, "", 0, 0},
		{"syntax error", TypeScript, "export default async function wf() {\n  const a: number = ;\n}", "Unexpected", 2, 21},
		{"forbidden import", TypeScript, "import fs from 'fs';\nexport default async function wf() { return fs }", `import "fs" is not allowed`, 1, 16},
		{"require", JavaScript, "const fs = require('fs');\nexport default async function wf() { return fs }", `import "fs" is not allowed`, 1, 20},
		{"unsupported API", TypeScript, "import { getExternalWorkflowHandle } from '@temporalio/workflow';\nexport default async function wf() { getExternalWorkflowHandle('x') }", `No matching export`, 1, 10},
		{"no export", TypeScript, "async function wf() {}", "exports no workflow", 0, 0},
		{"two functions", TypeScript, "export async function a() {}\nexport async function b() {}", "several functions (a, b)", 0, 0},
		{"top level throws", JavaScript, "const x = 1;\n  throw new Error('boom');\nexport default async function wf() {}", "boom", 2, 13},
		{"top level loops", JavaScript, "while (true) {}\nexport default async function wf() {}", "interrupted", 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps := Check(c.src, c.lang)
			if c.want == "" {
				if ps != nil {
					t.Fatalf("problems: %v", Problems(ps))
				}
				return
			}
			if len(ps) == 0 || !strings.Contains(Problems(ps).Error(), c.want) {
				t.Fatalf("problems %v, want %q", Problems(ps), c.want)
			}
			if ps[0].Line != c.line || ps[0].Column != c.col {
				t.Errorf("at %d:%d, want %d:%d (%v)", ps[0].Line, ps[0].Column, c.line, c.col, ps[0])
			}
		})
	}
}

// The example workflows compile as the worker compiles them.
func TestExamplesCompile(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "workflows", "*.ts"))
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if ps := Check(string(src), TypeScript); ps != nil {
			t.Errorf("%s: %v", f, Problems(ps))
		}
	}
}

// The cache compiles a version once and stays within its byte budget.
func TestCacheBoundsItsBytes(t *testing.T) {
	c := NewCache(64 << 10)
	src := func(i int) string {
		return fmt.Sprintf("export default async function wf() { return %q }", strings.Repeat("x", 8<<10)+fmt.Sprint(i))
	}
	first, ps := c.Get("a", src(0), JavaScript)
	if ps != nil {
		t.Fatal(ps)
	}
	if again, _ := c.Get("a", src(0), JavaScript); again != first {
		t.Fatal("compiled twice")
	}
	for i := 1; i < 20; i++ {
		c.Get(fmt.Sprint(i), src(i), JavaScript)
	}
	if c.bytes > c.maxBytes || len(c.items) >= 20 {
		t.Fatalf("%d bytes in %d entries, budget %d", c.bytes, len(c.items), c.maxBytes)
	}
}
