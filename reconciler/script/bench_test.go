package script

import (
	"testing"

	"modernc.org/quickjs"
)

// BenchmarkNewRun is what a run's first workflow task spends on the VM: create it,
// install the runtime, load the program's bytecode.
func BenchmarkNewRun(b *testing.B) {
	prog, ps := Compile(`import { proxyActivities } from '@temporalio/workflow';
const { echo } = proxyActivities<{ echo(x: unknown): Promise<unknown> }>({ startToCloseTimeout: '10s' });
export default async function three(input: unknown): Promise<unknown> { return echo(await echo(await echo(input))); }`, TypeScript)
	if ps != nil {
		b.Fatal(ps)
	}
	for b.Loop() {
		vm, err := newVM(DefaultLimits, checkHost)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := vm.EvalBytecode(prog.bytecode); err != nil {
			b.Fatal(err)
		}
		vm.Close()
	}
}

// BenchmarkPrelude is the runtime's installation alone.
func BenchmarkPrelude(b *testing.B) {
	for b.Loop() {
		vm, err := quickjs.NewVM()
		if err != nil {
			b.Fatal(err)
		}
		vm.Close()
	}
}
