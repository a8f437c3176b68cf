import type { TaskLease } from "../task-queue.ts";
import { closedLoopDelay } from "./pull-loops.ts";

/** Stores a copy of a task message on its subject, with a message id: resolves once the stream has it. */
export type Republish = (subject: string, data: Uint8Array, msgId: string) => Promise<void>;

/**
 * `TaskLease.putBack` on NATS. The copy is published once the pull requests
 * of the loop the task came from are gone (`closedLoopDelay` from
 * `closedAt`): nats-server 2.9 would hand it to one of them, into a
 * subscription that is gone, and that delivery would be spent. The lease is
 * kept meanwhile (at once too: it may be near its end). Acked only once
 * the copy is stored: a crash in between leaves the original to its lease,
 * never the task lost. Neither once `wanted` says no after the wait.
 * Resolves whether a copy was stored.
 */
export const putBackCopy = async (
  lease: Pick<TaskLease, "seq" | "working" | "ack">,
  subject: string,
  data: Uint8Array,
  closedAt: number,
  keepEveryMs: number,
  republish: Republish,
  wanted: () => boolean = () => true,
): Promise<boolean> => {
  const keep = () => {
    try {
      lease.working();
    } catch {
      // The client closing: the lease runs out, the task comes back (or dies) as before.
    }
  };
  keep();
  const keeper = setInterval(keep, keepEveryMs);
  keeper.unref();
  try {
    const waitMs = closedLoopDelay(closedAt);
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs).unref());
    if (!wanted()) return false;
    await republish(subject, data, `back.${lease.seq}`);
  } finally {
    clearInterval(keeper);
  }
  try {
    lease.ack();
  } catch (error) {
    // The copy is stored: the original, unacked, is counted dead once its lease runs out.
    throw new Error("task put back, but its original's ack was not sent (the client closing)", {
      cause: error,
    });
  }
  return true;
};
