/**
 * The pieces of a supervision takeover on a fault bench (lease-*.both tests): a worker whose
 * answers the test holds, A's commit stored, B's take of the record stored, and who stored
 * which write of the record.
 */

import {
  type FaultBench,
  type FaultyRuntime,
  memoryBench,
  natsBench,
  type RecordHistory,
} from "./fault-runtimes.ts";
import type { FaultPoint } from "./faulty-broker.ts";
import { gate, waitUntil } from "./wait.ts";

/** The two brokers, for `describe.each(...)("… ($name)")`: each test makes a bench of its own. */
export const leaseBenches = [
  { name: "memory", make: memoryBench },
  { name: "nats", make: natsBench },
];

/**
 * Runs `test` on a bench of its own, disposed after it; each gate `heldGate()` hands out is
 * opened then at the latest (before the dispose), so nothing held behind one outlives the test.
 */
export const onOwnBench = async (
  make: () => Promise<FaultBench>,
  test: (bench: FaultBench, heldGate: () => ReturnType<typeof gate>) => Promise<void>,
): Promise<void> => {
  const bench = await make();
  const gates: Array<ReturnType<typeof gate>> = [];
  try {
    await test(bench, () => {
      const g = gate();
      gates.push(g);
      return g;
    });
  } finally {
    for (const g of gates) g.open();
    await bench.dispose();
  }
};

/**
 * Holds `runtime`'s writes at `point` (each one, or its first only) until `go` opens: the
 * promise it returns resolves once one is held.
 */
export const holdWrites = (
  runtime: FaultyRuntime,
  point: FaultPoint,
  go: Promise<void>,
  which: "each" | "first",
): Promise<void> => {
  const writing = gate();
  let writes = 0;
  runtime.faults.before(point, async () => {
    if (which === "first" && writes++ > 0) return;
    writing.open();
    await go;
  });
  return writing.opened;
};

/**
 * A worker runtime answering `queue`'s tasks (numbers, each answered with itself) once
 * `hold(payload)` resolves: the ledger of the tasks it answered, in order.
 */
export const heldWorker = async (
  bench: FaultBench,
  queue: string,
  hold: (payload: number) => Promise<void>,
  /** The worker's (its default when not given). */
  concurrency?: number,
): Promise<readonly number[]> => {
  const w = await bench.runtime({ roles: ["worker"] });
  const answered: number[] = [];
  w.rt.workers.start<number, number>({
    queue,
    ...(concurrency === undefined ? {} : { concurrency }),
    handler: async (task) => {
      await hold(task.payload);
      answered.push(task.payload);
      return task.payload;
    },
  });
  return answered;
};

/** Until the job's commit is stored, as `a` reads it: only a gate (the memory store's watch hands out no write made before it). */
export const commitStored = (a: FaultyRuntime, jobId: string): Promise<void> =>
  waitUntil(async () => (await a.broker.getRecord(jobId))?.record.phase === "committed", {
    timeoutMs: 10_000,
    message: "the job's commit stored",
  });

/** Until the store handed out a write of the job's record naming `b` its supervisor: B's take. */
export const takeStored = (history: RecordHistory, jobId: string, b: FaultyRuntime): Promise<void> =>
  waitUntil(() => history.of(jobId).some(({ record }) => record.supervisor === b.broker.leases.holder), {
    timeoutMs: 30_000,
    message: "B's take of the job's record stored",
  });

/** Until the store handed out a write of the job's record ending it `status`: that write. */
export const endStored = async (history: RecordHistory, jobId: string, status: "succeeded" | "failed") => {
  const ended = () => history.of(jobId).find(({ record }) => record.status === status);
  await waitUntil(() => ended() !== undefined, { timeoutMs: 30_000, message: "the job's end stored" });
  return ended()!;
};

/** Who stored a revision of the job's record, by the runtimes' ledgers of their updates (read now). */
export const writerOf = (a: FaultyRuntime, b: FaultyRuntime, jobId: string) => {
  const byA = a.faults.recordUpdates(jobId);
  const byB = b.faults.recordUpdates(jobId);
  return (revision: number): "A" | "B" | "another" =>
    byA.includes(revision) ? "A" : byB.includes(revision) ? "B" : "another";
};
