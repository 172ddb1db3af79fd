package script

import (
	"testing"
	"time"
)

// Operations the engine runs natively, where the interrupt cannot reach, end (with an
// error) well within the SDK's 1 s deadlock detector at the default limits: the
// runtime refuses those whose work no dense value could need, and the memory limit
// bounds the rest.
func TestNativeLoopsEndWithinTheDeadline(t *testing.T) {
	for _, code := range []string{
		`JSON.stringify(new Array(2.5e8))`,
		`JSON.stringify({a: [1, {b: new Array(2.5e8)}]})`,
		`JSON.stringify({toJSON() { return new Array(2.5e8) }})`,
		`JSON.stringify([new Array(2.5e8)], ['a'])`,
		`'a'.repeat(1 << 20).replaceAll('a', 'x'.repeat(4096)).length`,
		`'a'.repeat(1 << 20).replace(/a/g, 'x'.repeat(4096)).length`,
		`Array(2000).fill('x'.repeat(8 << 20)).join('').length`,
		`new Array(2.5e8).join('x')`,
		`[...new Array(2.5e8)]`,
		`for (const x of new Array(2.5e8)) {}`,
		`Array.prototype.concat.call([], new Array(2.5e8)).length`,
		`Array.from(new Array(2.5e8)).length`,
		`Array.from({length: 2.5e8}).length`,
		`new Set(new Array(2.5e8)).size`,
		`new Array(2.5e8).flat().length`,
		`new Array(2.5e8).sort()`,
		`Array.prototype.indexOf.call({length: 2.5e8}, 1)`,
		`new Uint8Array(1 << 24).sort()`,
		`'x'.repeat(1 << 24).split('').length`,
		`let s = 'ab'; for (;;) s = s + s;`,
		`const a = []; for (;;) a.push({});`,
		`new Uint8Array(40e9)`,
		`/(a+)+$/.test('a'.repeat(40) + 'b')`,
	} {
		vm, err := newVM(DefaultLimits, checkHost)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		_, err = vm.Eval(code, 0)
		took := time.Since(t0)
		vm.Close()
		t.Logf("%-66s %6v %v", code, took.Round(time.Millisecond), err)
		if err == nil {
			t.Errorf("%s: no error", code)
		}
		if took > 2*time.Second { // 500 ms limit; the slack is for a loaded machine
			t.Errorf("%s ran %s", code, took)
		}
	}
	vm, err := newVM(DefaultLimits, checkHost)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	for code, want := range map[string]any{
		`typeof BigInt`:                               "undefined",
		`'abc'.replaceAll('b', 'x$&y')`:               "axbyc",
		`JSON.stringify({a: [1, 2]}, null, 1).length`: 23,
		`[...[1, 2, 3]].concat([4]).join()`:           "1,2,3,4",
	} {
		if got, err := vm.Eval(code, 0); err != nil || got != want {
			t.Errorf("%s = %v, %v; want %v", code, got, err, want)
		}
	}
}
