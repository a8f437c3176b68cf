import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type { Presence } from "../adapters/presence.ts";
import { childLogger } from "../kernel/logger.ts";
import { byQueue, isPresent, parseWorkerInfo, type WorkerInfo } from "../kernel/presence.ts";
import type { RuntimeCore } from "./runtime-core.ts";
import { version } from "./version.ts";
import type { WorkerStats } from "./worker-options.ts";

/** What a worker tells of itself each time it announces. */
export interface PresentWorker {
  readonly id: string;
  readonly queue: string;
  readonly concurrency: number;
  readonly agent: string | undefined;
  stats(): WorkerStats;
  /** The bound agent's current target. */
  target(): string | undefined;
}

const keyOf = (workerId: string) => `worker.${workerId}`;

/**
 * Announces `worker` now and every third of `presenceMs` until `stop()`,
 * which then withdraws it (tracked by the runtime's loops, so `rt.stop()`
 * waits for it and never longer than its operation's deadline). A worker
 * whose process dies stops announcing, and readers drop it once its last
 * announcement has run out.
 */
export const announceWorker = (
  core: Pick<RuntimeCore, "options" | "loops" | "clock" | "logger">,
  presence: Presence,
  worker: PresentWorker,
): { stop(): void } => {
  const { presenceMs, name } = core.options;
  const log = childLogger(core.logger, { actor: "worker", queue: worker.queue, workerId: worker.id });
  const startedAt = core.clock.now();
  const stopping = new AbortController();
  const announce = () => {
    const { processed, failed, inFlight } = worker.stats();
    const target = worker.target();
    const info: WorkerInfo = {
      id: worker.id,
      runtime: name,
      queue: worker.queue,
      concurrency: worker.concurrency,
      inFlight,
      processed,
      failed,
      ...(worker.agent === undefined ? {} : { agent: worker.agent }),
      ...(target === undefined ? {} : { target }),
      version,
      host: hostname(),
      pid: process.pid,
      startedAt,
      seenAt: core.clock.now(),
      presenceMs,
    };
    return presence.announce(keyOf(worker.id), JSON.stringify(info));
  };
  let announcing: Promise<unknown> = Promise.resolve();
  core.loops.run(`presence:${worker.id}`, async (group) => {
    const signal = AbortSignal.any([group, stopping.signal]);
    while (!signal.aborted) {
      // Not announced this time: the next one may be; a reader sees the worker gone meanwhile.
      // Failed as the worker stopped (its deadline past the stop, the server away): unsaid.
      announcing = announce().catch(
        (error) => signal.aborted || log.debug({ err: error }, "worker not announced"),
      );
      await announcing;
      await sleep(presenceMs / 3, undefined, { signal }).catch(() => undefined);
    }
  });
  return {
    stop: () => {
      if (stopping.signal.aborted) return;
      stopping.abort();
      // After the announcement in flight (if any): written after the withdraw, it would list a
      // stopped worker for presenceMs.
      core.loops.track(`presence-withdraw:${worker.id}`, () =>
        announcing.then(() => presence.withdraw(keyOf(worker.id))),
      );
    },
  };
};

/** Every worker whose announcement stands at `now`, of every runtime (or of `queue`'s). */
export const listWorkers = async (presence: Presence, now: number, queue?: string): Promise<WorkerInfo[]> =>
  (await presence.list())
    .flatMap(({ value, storedAt }) => {
      const info = parseWorkerInfo(value);
      return info && isPresent(info, storedAt, now) && (queue === undefined || info.queue === queue)
        ? [info]
        : [];
    })
    .sort(byQueue);
