// What must replay identically: workflow time, seeded randomness, uuid4, a durable
// timer, then a wait for a signal (a new worker may replay it after a restart).
import { sleep, uuid4, condition, defineSignal, defineQuery, setHandler } from '@temporalio/workflow';

export const go = defineSignal<[string]>('go');
export const seen = defineQuery<unknown>('seen');
const label = 'v1';

export default async function replayable(): Promise<unknown> {
  const before = { now: Date.now(), date: new Date().toISOString(), random: Math.random(), uuid: uuid4() };
  await sleep(20);
  const after = { random: Math.random(), slept: Date.now() - before.now >= 20 };
  let payload: string | undefined;
  setHandler(go, (p) => { payload = p; });
  setHandler(seen, () => ({ before, after }));
  await condition(() => payload !== undefined);
  return { label, payload, before, after };
}
