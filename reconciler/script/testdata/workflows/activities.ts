// Activities: built-ins and a component by name, options and retries, fan-out,
// a local activity.
import { proxyActivities, proxyLocalActivities, ActivityFailure, ApplicationFailure, log } from '@temporalio/workflow';

interface Activities {
  echo<T>(input: T): Promise<T>;
  log(message: unknown): Promise<null>;
  vat(input: { net: number }): Promise<{ gross: number }>;
  boom(input: { key: string }): Promise<never>;
  'http.request'(input: { url: string; method?: string }): Promise<{ status: number; body: any }>;
}

const acts = proxyActivities<Activities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '100ms', backoffCoefficient: 1.5, maximumInterval: '1s', maximumAttempts: 3 },
});
const strict = proxyActivities<Activities>({
  scheduleToCloseTimeout: 10_000,
  heartbeatTimeout: '5s',
  retry: { maximumAttempts: 5, nonRetryableErrorTypes: ['Error'] },
});
const local = proxyLocalActivities<Activities>({ startToCloseTimeout: '5s' });

export default async function activities(input: { net: number; url: string }): Promise<unknown> {
  const [a, b, c] = await Promise.all([acts.echo('a'), acts.echo('b'), acts.echo('c')]);
  const { gross } = await acts.vat({ net: input.net });
  const retried = await acts.boom({ key: 'retried' }).catch((err: ActivityFailure) => err.retryState);
  await acts.log({ gross });
  const echoed = await local.echo({ local: true });
  const http = await acts['http.request']({ url: input.url });
  let notRetried = '';
  try {
    await strict.boom({ key: 'not retried' });
  } catch (err) {
    if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure) {
      notRetried = `${err.activityType} ${err.retryState} ${err.cause.type}`;
    }
  }
  log.info('activities done', { gross });
  return { fanout: [a, b, c].join(''), gross, retried, notRetried, echoed, status: http.status, body: http.body };
}
