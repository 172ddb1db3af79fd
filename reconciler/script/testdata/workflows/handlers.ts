// Signals, queries and updates (one with a validator that rejects).
import { defineSignal, defineQuery, defineUpdate, setHandler, condition, sleep } from '@temporalio/workflow';

export const add = defineSignal<[string]>('add');
export const finish = defineSignal('finish');
export const items = defineQuery<string[]>('items');
export const countWith = defineQuery<number, [string]>('countWith');
export const reserve = defineUpdate<number, [number]>('reserve');

export default async function handlers(stock: number): Promise<{ items: string[]; stock: number }> {
  const list: string[] = [];
  let done = false;
  setHandler(add, (item) => { list.push(item); });
  setHandler(finish, () => { done = true; });
  setHandler(items, () => list);
  setHandler(countWith, (extra) => list.length + extra.length);
  setHandler(reserve, async (n) => {
    await sleep(10);
    stock -= n;
    return stock;
  }, {
    validator: (n) => {
      if (n > stock) throw new Error(`only ${stock} left`);
    },
  });
  await condition(() => done);
  return { items: list, stock };
}
