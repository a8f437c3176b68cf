/**
 * `jetstate-jobs/testing`: run jobs in tests without a NATS server. The memory
 * broker has JetStream's semantics (one contract suite checks both, see
 * test/contract/), and a `ManualClock` moves leases, nak delays and duplicate
 * windows forward without sleeping.
 *
 * ```ts
 * const final = await runJob((task) => task.payload * 2, [1, 2, 3]);
 * expect(final).toMatchObject({ status: "succeeded", done: 3 });
 * ```
 */
import type { Broker } from "./adapters/broker.ts";
import type { JobSnapshot } from "./api/job-handle.ts";
import type { RuntimeOptions } from "./api/options.ts";
import { createTestRuntime } from "./api/runtime.ts";
import type { SubmitRequest } from "./effects/plan-submit.ts";
import type { Clock } from "./kernel/clock.ts";
import { silentLogger } from "./kernel/logger.ts";
import type { Queue } from "./kernel/queue.ts";

export { createTestRuntime };

import type { WorkerOptions } from "./api/workers.ts";

export type { Broker } from "./adapters/broker.ts";
export type { DeadLetter } from "./adapters/dead-letters.ts";
export {
  createMemoryBroker,
  createMemoryServer,
  type MemoryBroker,
  type MemoryBrokerOptions,
  type MemoryServer,
  type MemoryServerOptions,
} from "./adapters/memory/memory-broker.ts";
export type { TaskLease } from "./adapters/task-queue.ts";
export { type Clock, ManualClock, realClock } from "./kernel/clock.ts";

/** A runtime on the memory broker: anything `createRuntime` takes, plus the broker and the clock. */
export type TestRuntimeOptions = RuntimeOptions & {
  /** `"memory"` (default): a memory broker of its own; or a broker to share with other runtimes. */
  readonly broker?: "memory" | Broker;
  readonly clock?: Clock;
};

export interface RunJobOptions<Payload, Result> {
  /** The queue (default `"test"`); a `defineQueue` queue validates tasks and results. */
  readonly queue?: string | Queue<Payload, Result>;
  /**
   * Tasks handled at once.
   * @defaultValue 8
   */
  readonly concurrency?: number;
  /** Submit options. `backoff` defaults to `[0]` here: a failed task is retried at once. */
  readonly job?: Omit<SubmitRequest<Payload, Result>, "queue" | "tasks">;
  /** Worker options besides queue, handler and concurrency. */
  readonly worker?: Omit<WorkerOptions<Payload, Result>, "queue" | "handler" | "concurrency">;
  /** The test runtime's options (default: memory broker, silent logger). */
  readonly runtime?: TestRuntimeOptions;
}

/**
 * Submits `tasks` on a fresh test runtime, runs `handler` on them with one
 * worker, and returns the job's final snapshot (succeeded or failed). The
 * runtime is stopped before it returns, whatever happened.
 */
export const runJob = async <Payload, Result>(
  handler: WorkerOptions<Payload, Result>["handler"],
  tasks: readonly Payload[],
  options: RunJobOptions<Payload, Result> = {},
): Promise<JobSnapshot> => {
  const rt = await createTestRuntime({ logger: silentLogger(), ...options.runtime });
  try {
    const queue = options.queue ?? "test";
    const worker = rt.workers.start<Payload, Result>({
      ...options.worker,
      queue,
      handler,
      concurrency: options.concurrency ?? 8,
    });
    try {
      const job = await rt.jobs.submit<Payload, Result>({ backoff: [0], ...options.job, queue, tasks });
      return await job.done();
    } finally {
      await worker.stop();
    }
  } finally {
    await rt.stop();
  }
};
