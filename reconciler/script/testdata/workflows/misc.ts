// patched / deprecatePatch, workflowInfo, uuid4, failures of each kind.
import { patched, deprecatePatch, workflowInfo, uuid4, ApplicationFailure } from '@temporalio/workflow';

export default async function misc(mode: string): Promise<unknown> {
  switch (mode) {
    case 'reject':
      throw ApplicationFailure.nonRetryable('order 7 rejected', 'OrderRejected', { order: 7 });
    case 'create':
      throw ApplicationFailure.create({ message: 'created', type: 'Created', nonRetryable: true });
    case 'typeerror':
      (null as any).x = 1;
      break;
    case 'custom': {
      class QuotaExceeded extends Error { name = 'QuotaExceeded'; }
      throw new QuotaExceeded('too many');
    }
  }
  deprecatePatch('old-fix');
  const info = workflowInfo();
  return {
    patched: patched('new-path'),
    workflowId: info.workflowId,
    workflowType: info.workflowType,
    taskQueue: info.taskQueue,
    namespace: info.namespace,
    attempt: info.attempt,
    historyLength: info.historyLength > 0,
    startTime: info.startTime instanceof Date,
    uuid: uuid4().length,
  };
}
