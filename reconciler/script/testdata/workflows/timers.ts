// Timers and conditions: sleep with milliseconds and duration strings, setTimeout,
// condition with a timeout that expires and one a signal satisfies.
import { sleep, condition, defineSignal, setHandler } from '@temporalio/workflow';

export const poke = defineSignal<[number]>('poke');

export async function timers(): Promise<unknown> {
  const started = Date.now();
  await sleep(50);
  await sleep('100 ms');
  const fired = await new Promise<string>((resolve) => setTimeout(() => resolve('fired'), 30));
  let pokes = 0;
  setHandler(poke, (n) => { pokes += n; });
  const early = await condition(() => pokes > 100, '200ms');
  await condition(() => pokes >= 3);
  return { fired, early, pokes, elapsedAtLeast150: Date.now() - started >= 150 };
}
