import type { Broker } from "../adapters/broker.ts";
import { inBatches } from "../kernel/batches.ts";
import {
  IdempotencyConflict,
  InvalidArgument,
  MalformedMessage,
  PermanentBrokerError,
  RoleNotHeld,
} from "../kernel/errors.ts";
import { type FlowRecord, flowNodeKey } from "../kernel/flow-record.ts";
import type { Jobs } from "./jobs-face.ts";

/**
 * A submit refused for good: the same request would be refused at every
 * step. Anything else, a plain error included (a submit rolled back for
 * passing its commit deadline under load, a lost compare-and-set, the
 * runtime stopping), is tried again by the next step, here or in another
 * runtime: failing the node for it failed whole flows on a runtime's
 * orderly stop (review finding).
 */
const refusedForGood = (error: unknown): boolean =>
  error instanceof InvalidArgument ||
  error instanceof IdempotencyConflict ||
  error instanceof PermanentBrokerError ||
  error instanceof RoleNotHeld ||
  error instanceof MalformedMessage;

/** Jobs a step submits at once. */
const submitsAtOnce = 32;

/** What a step's submits and cancels need of their driver. */
export interface FlowActs {
  readonly broker: Broker;
  readonly jobs: Jobs;
  readonly stopping: AbortSignal;
  /** The driver's test hook at a write (`FlowDriver.point`). */
  readonly point: (point: "submit" | "cancel", flowId: string, node?: string) => void;
}

/**
 * A step's submits: the nodes whose submit was made (landed or not), those refused for good with
 * why, and the failure that stopped them (a submit to try again, or the record not read).
 */
export interface Submitted {
  readonly tried: readonly string[];
  readonly refused: ReadonlyMap<string, string>;
  readonly failed?: unknown;
}

/**
 * The ready nodes' jobs together, as a user would submit independent jobs,
 * 32 at once. Before each batch after the first the record is read again,
 * and none is submitted once the flow was cancelled (here or in another
 * runtime): a driver went on with every batch of a flow of hundreds before
 * it looked, and their tasks ran after the cancel had resolved (review
 * finding, `flows-cancel-big.test.ts`). The nodes left are `submitting`
 * without a job: the cancel's step writes them cancelled. A failure is
 * handed back with what was tried, not thrown:
 * a submit failing while the others of its batch went on left their jobs to
 * no one when the flow was cancelled meanwhile (a review,
 * `flows-cancel-batch-throws.both.test.ts`). The driver's hook throwing
 * (a crash, in tests) still throws.
 */
export const submitNodes = async (
  acts: FlowActs,
  record: FlowRecord,
  names: readonly string[],
): Promise<Submitted> => {
  const flowId = record.id;
  const tried: string[] = [];
  const refused = new Map<string, string>();
  for (let at = 0; at < names.length; at += submitsAtOnce) {
    if (at > 0) {
      const now = await acts.broker.flows.getFlow(flowId).catch((error: unknown) => ({ error }));
      if (now && "error" in now) return { tried, refused, failed: now.error };
      if (now?.record.status === "cancelled") break;
    }
    const batch = names.slice(at, at + submitsAtOnce);
    tried.push(...batch);
    // The first failure ends the step at once, handed back: waited for whole, a batch held a
    // failed step, and a cancel queued behind it, as long as its slowest submit (a review,
    // flows-cancel-held-batch.test.ts). Its other submits go on.
    const failed = await Promise.all(
      batch.map((name) => {
        const node = record.nodes[name] as FlowRecord["nodes"][string];
        acts.point("submit", flowId, name);
        return acts.jobs
          .submit({
            ...(node.request as { queue: string; tasks: unknown[] }),
            idempotencyKey: flowNodeKey(flowId, name),
          })
          .catch((error: unknown) => {
            // A transient failure is tried again by the next step; one refused for good would be
            // refused at every step: the node fails with it, and the flow goes on by its policy.
            if (!refusedForGood(error) || acts.stopping.aborted) throw error;
            refused.set(name, error instanceof Error ? error.message : String(error));
          });
      }),
    ).then(
      () => undefined,
      (error: unknown) => ({ error }),
    );
    if (failed) return { tried, refused, failed: failed.error };
  }
  return { tried, refused };
};

/**
 * Cancels a cancelled flow's jobs, 32 at once: one after the other, the
 * jobs of a flow of hundreds were cancelled over seconds, their tasks
 * running meanwhile (review finding). `nodeOf` names each job's node for
 * the hook.
 */
export const cancelJobs = async (
  acts: FlowActs,
  flowId: string,
  jobIds: readonly string[],
  nodeOf?: (jobId: string) => string | undefined,
): Promise<void> => {
  await inBatches(jobIds, async (jobId) => {
    acts.point("cancel", flowId, nodeOf?.(jobId));
    await (await acts.jobs.get(jobId))?.cancel("flow cancelled");
  });
};
