// Cancellation: a scope with a timeout, a scope cancelled by the code, and the run
// cancelled by a client, cleaning up in a non-cancellable scope.
import { CancellationScope, proxyActivities, sleep, isCancellation, defineQuery, setHandler } from '@temporalio/workflow';

const { echo } = proxyActivities<{ echo(x: string): Promise<string> }>({ startToCloseTimeout: '5s' });
export const steps = defineQuery<string[]>('steps');

export async function cancel(): Promise<string[]> {
  const out: string[] = [];
  setHandler(steps, () => out);
  try {
    await CancellationScope.withTimeout(50, () => sleep('1 hour'));
  } catch (err) {
    out.push(`timeout cancelled: ${isCancellation(err)}`);
  }
  const scope = new CancellationScope();
  const timer = scope.run(() => sleep('1 hour'));
  scope.cancel();
  await timer.catch((err) => out.push(`scope cancelled: ${isCancellation(err)}`));
  out.push('waiting');
  try {
    await sleep('1 day');
  } catch (err) {
    if (!isCancellation(err)) throw err;
    out.push(await CancellationScope.nonCancellable(() => echo('cleaned up')));
    throw err;
  }
  return out;
}
