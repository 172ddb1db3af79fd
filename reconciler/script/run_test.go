package script

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
)

// env runs src as the workflow "wf" (and any other name as a child, the same module)
// in the SDK's in-memory test environment, with activities echo, fail and slow.
func env(t *testing.T, src string) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	return envWith(t, src, DefaultLimits)
}

func envWith(t *testing.T, src string, limits Limits) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	prog, ps := Compile(src, TypeScript)
	if ps != nil {
		t.Fatalf("compile: %v", ps)
	}
	var s testsuite.WorkflowTestSuite
	e := s.NewTestWorkflowEnvironment()
	e.RegisterDynamicWorkflow(func(ctx workflow.Context, args converter.EncodedValues) (any, error) {
		return Execute(ctx, prog, args, Options{Limits: limits})
	}, workflow.DynamicRegisterOptions{})
	e.RegisterDynamicActivity(func(ctx context.Context, args converter.EncodedValues) (any, error) {
		var in any
		if args.HasValues() {
			_ = args.Get(&in)
		}
		switch name := activity.GetInfo(ctx).ActivityType.Name; name {
		case "echo":
			return in, nil
		case "fail":
			return nil, temporal.NewApplicationError(fmt.Sprint(in), "Boom")
		case "flaky":
			if activity.GetInfo(ctx).Attempt < 3 {
				return nil, errors.New("not yet")
			}
			return activity.GetInfo(ctx).Attempt, nil
		case "slow":
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(5 * time.Second):
				return nil, nil
			}
		default:
			return nil, fmt.Errorf("no activity %s", name)
		}
	}, activity.DynamicRegisterOptions{})
	return e
}

func result(t *testing.T, e *testsuite.TestWorkflowEnvironment) any {
	t.Helper()
	if !e.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	if err := e.GetWorkflowError(); err != nil {
		t.Fatalf("workflow failed: %v", err)
	}
	var v any
	if err := e.GetWorkflowResult(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }

const header = `import * as wf from '@temporalio/workflow';
const acts = wf.proxyActivities<any>({ startToCloseTimeout: '10s', retry: { initialInterval: '1ms', maximumAttempts: 5 } });
`

func TestActivitiesTimersAndArguments(t *testing.T) {
	e := env(t, header+`
export default async function main(a: number, b: string) {
  const t0 = Date.now();
  const [x, y] = await Promise.all([acts.echo({a}), acts.echo(b)]);
  await wf.sleep('2 minutes');
  const n = await acts.flaky();
  return { x, y, slept: Date.now() - t0 >= 120000, n };
}`)
	e.ExecuteWorkflow("wf", 1, "two")
	if got := jsonOf(result(t, e)); got != `{"n":3,"slept":true,"x":{"a":1},"y":"two"}` {
		t.Fatalf("result %s", got)
	}
}

func TestFailuresReachTheClientTyped(t *testing.T) {
	e := env(t, header+`
export default async function main() {
  try { await acts.fail('bad'); } catch (err) {
    if (!(err instanceof wf.ActivityFailure) || !(err.cause instanceof wf.ApplicationFailure) || err.cause.type !== 'Boom') throw new Error('wrong failure ' + err);
  }
  throw wf.ApplicationFailure.nonRetryable('no way', 'Rejected', {why: 1});
}`)
	e.ExecuteWorkflow("wf")
	var app *temporal.ApplicationError
	if err := e.GetWorkflowError(); !errors.As(err, &app) || app.Type() != "Rejected" || !app.NonRetryable() {
		t.Fatalf("error %v", err)
	}
}

// A failure's stack trace names positions in the module's source.
func TestStacksPointAtTheSource(t *testing.T) {
	e := env(t, header+`
function check(n: number): number {
  if (n > 1) throw new TypeError('too big: ' + n);
  return n;
}
export default async function main() {
  await wf.sleep(1);
  return check(2);
}`)
	e.ExecuteWorkflow("wf")
	var app *temporal.ApplicationError
	if err := e.GetWorkflowError(); !errors.As(err, &app) || app.Type() != "TypeError" {
		t.Fatalf("error %v", err)
	}
	var details map[string]string
	if err := app.Details(&details); err != nil {
		t.Fatal(err)
	}
	// header is 2 lines: check throws at line 5, called from main at line 10.
	if st := details["stack"]; !strings.Contains(st, "workflow.ts:5:") || !strings.Contains(st, "workflow.ts:10:") {
		t.Fatalf("stack %q", st)
	}
}

func TestSignalsQueriesConditions(t *testing.T) {
	e := env(t, header+`
const go = wf.defineSignal<[string]>('go');
const state = wf.defineQuery<string>('state');
export default async function main() {
  let got: string[] = [];
  wf.setHandler(go, (s) => { got.push(s) });
  wf.setHandler(state, () => got.join(','));
  const early = await wf.condition(() => got.length > 5, '1 minute');
  await wf.condition(() => got.length >= 2);
  return { early, got };
}`)
	e.RegisterDelayedCallback(func() { e.SignalWorkflow("go", "a") }, 2*time.Minute)
	e.RegisterDelayedCallback(func() {
		v, err := e.QueryWorkflow("state")
		if err != nil {
			t.Error(err)
			return
		}
		var s string
		_ = v.Get(&s)
		if s != "a" {
			t.Errorf("query: %q", s)
		}
	}, 150*time.Second)
	e.RegisterDelayedCallback(func() { e.SignalWorkflow("go", "b") }, 3*time.Minute)
	e.ExecuteWorkflow("wf")
	if got := jsonOf(result(t, e)); got != `{"early":false,"got":["a","b"]}` {
		t.Fatalf("result %s", got)
	}
}

func TestCancellationScopes(t *testing.T) {
	e := env(t, header+`
export default async function main() {
  const out: string[] = [];
  try {
    await wf.CancellationScope.withTimeout('1s', async () => { await wf.sleep('1 hour'); });
  } catch (err) { out.push('timeout:' + wf.isCancellation(err)); }
  const scope = new wf.CancellationScope();
  const p = scope.run(async () => { await wf.sleep(10); return acts.slow(); });
  await wf.sleep(100);
  scope.cancel();
  try { await p; } catch (err) { out.push('activity:' + (err instanceof wf.ActivityFailure) + ':' + wf.isCancellation(err)); }
  const inner = wf.CancellationScope.nonCancellable(() => wf.sleep(50).then(() => 'shielded'));
  return [...out, await inner];
}`)
	e.ExecuteWorkflow("wf")
	if got := jsonOf(result(t, e)); got != `["timeout:true","activity:true:true","shielded"]` {
		t.Fatalf("result %s", got)
	}
}

func TestCancellingTheRun(t *testing.T) {
	e := env(t, header+`
export default async function main() {
  try {
    await wf.sleep('1 day');
  } catch (err) {
    if (!wf.isCancellation(err)) throw err;
    await wf.CancellationScope.nonCancellable(() => acts.echo('cleanup'));
    throw err;
  }
}`)
	e.RegisterDelayedCallback(func() { e.CancelWorkflow() }, time.Hour)
	e.ExecuteWorkflow("wf")
	var canceled *temporal.CanceledError
	if err := e.GetWorkflowError(); !errors.As(err, &canceled) {
		t.Fatalf("want cancelled, got %v", err)
	}
}

func TestDeterministicClockAndRandomness(t *testing.T) {
	src := header + `
export default async function main() {
  const a = [Date.now(), new Date().getTime(), Math.random(), wf.uuid4()];
  await wf.sleep('1h');
  return [...a, Date.now() - a[0], Math.random() !== a[2]];
}`
	e := env(t, src)
	e.ExecuteWorkflow("wf")
	v := result(t, e).([]any)
	if v[0] != v[1] || v[4] != float64(3600000) || v[5] != true || len(v[3].(string)) != 36 {
		t.Fatalf("result %v", v)
	}
}

func TestUpdatesWithValidator(t *testing.T) {
	e := env(t, header+`
const add = wf.defineUpdate<number, [number]>('add');
export default async function main() {
  let total = 0;
  wf.setHandler(add, async (n) => { await wf.sleep(1); total += n; return total; },
    { validator: (n) => { if (n < 0) throw new Error('negative'); } });
  await wf.condition(() => total >= 5);
  return total;
}`)
	var got []string
	e.RegisterDelayedCallback(func() {
		for _, n := range []int{-1, 2, 3} {
			n := n
			e.UpdateWorkflow("add", fmt.Sprint(n), &testsuite.TestUpdateCallback{
				OnReject:   func(err error) { got = append(got, "reject:"+err.Error()) },
				OnAccept:   func() {},
				OnComplete: func(v any, err error) { got = append(got, fmt.Sprintf("done:%v:%v", v, err)) },
			}, n)
		}
	}, time.Minute)
	e.ExecuteWorkflow("wf")
	if v := result(t, e); v != float64(5) {
		t.Fatalf("result %v", v)
	}
	if s := strings.Join(got, " "); !strings.Contains(s, "reject:negative") {
		t.Fatalf("updates: %s", s)
	}
}

func TestEndlessLoopFailsTheTask(t *testing.T) {
	e := env(t, header+`export default async function main() { while (true) {} }`)
	e.ExecuteWorkflow("wf")
	err := e.GetWorkflowError()
	if err == nil || !strings.Contains(err.Error(), FailureTimeout) {
		t.Fatalf("error %v", err)
	}
}

func TestMemoryLimitFailsTheTask(t *testing.T) {
	for name, code := range map[string]string{
		"strings": `const a: string[] = []; for (;;) a.push('x'.repeat(1 << 20) + a.length);`,
		"buffers": `const a: object[] = []; for (;;) a.push({ n: a.length, b: new Uint8Array(1 << 20) });`,
	} {
		t.Run(name, func(t *testing.T) {
			e := envWith(t, header+"export default async function main() { "+code+" }", Limits{Memory: 8 << 20, Yield: DefaultLimits.Yield})
			e.ExecuteWorkflow("wf")
			err := e.GetWorkflowError()
			if err == nil || !strings.Contains(err.Error(), FailureMemory) {
				t.Fatalf("error %v", err)
			}
		})
	}
}
