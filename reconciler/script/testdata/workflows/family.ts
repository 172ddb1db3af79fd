// Child workflows (both forms) of the same project, and continueAsNew.
import { executeChild, startChild, continueAsNew, workflowInfo, uuid4 } from '@temporalio/workflow';

export default async function family(mode: string, n: number): Promise<unknown> {
  if (mode === 'double') return n * 2;
  if (mode === 'count') {
    if (n < 3) await continueAsNew<typeof family>('count', n + 1);
    return { counted: n, continuedFrom: workflowInfo().continuedFromExecutionRunId !== undefined };
  }
  const direct = await executeChild('family', { args: ['double', n] });
  const handle = await startChild('family', { args: ['double', n + 1], workflowId: 'handle-' + uuid4() });
  const viaHandle = await handle.result();
  return { direct, viaHandle, childId: handle.workflowId, parent: workflowInfo().workflowType };
}
