import type { Broker } from "../adapters/broker.ts";
import type { BrokerCleanupOptions, CleanupReport } from "../adapters/broker-admin.ts";
import { isSettled } from "../kernel/flow-record.ts";

/**
 * One cleanup pass (`rt.admin.cleanup()`, and every `jobs.cleanupIntervalMs`):
 * the broker's, over jobs, then the flows settled past retention. The flows
 * not settled are read first and handed to the broker's pass, which keeps
 * their nodes' jobs: a flow's driver that has not seen a node's end yet
 * would read a removed job as never submitted and submit it again.
 */
export const cleanupOnce = async (
  broker: Broker,
  options: BrokerCleanupOptions,
  /** The runtime's clock, for the flows' ages (the jobs' are the broker's: a memory server's own clock). */
  now: number,
): Promise<CleanupReport> => {
  // Read before the job records: a flow submitted after this read has no job past retention,
  // unless the retention asked is about the pass's own length (`retentionMs: 0`).
  const liveFlows = new Set((await broker.flows.listLive()).map((mark) => mark.id));
  const jobs = await broker.cleanup({ ...options, liveFlows });
  // Still marked: its driver has not unmarked it yet (the next sweep does); the next pass removes it.
  const expired = (await broker.flows.listFlows()).filter(
    ({ record }) =>
      isSettled(record) &&
      (record.finishedAt ?? record.updatedAt) + options.retentionMs <= now &&
      !liveFlows.has(record.id),
  );
  if (options.dryRun) return { ...jobs, flowsRemoved: expired.map(({ record }) => record.id) };
  const flowsRemoved: string[] = [];
  // Written since it was read (it cannot be reopened, but a record put back by hand may be): left.
  for (const { record, revision } of expired)
    if (await broker.flows.removeFlow(record.id, revision)) flowsRemoved.push(record.id);
  return { ...jobs, flowsRemoved };
};
