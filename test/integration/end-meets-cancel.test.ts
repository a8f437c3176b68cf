/**
 * A supervisor's own end meets a cancel recorded elsewhere first. The
 * supervisor counted every answer and is writing the job's end when another
 * runtime's cancel, written from a view behind those answers, lands: the
 * cancel is how the job ended, with the answers the supervisor counted
 * (`finalize` in api/job-effects.ts raises them). The cancel is written
 * raw, as a runtime that opened the job a moment before writes it. The
 * oracles: the handlers' ledger and the record as the server holds it.
 */
import { afterEach, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { isFinal, type JobRecord } from "../../src/kernel/job-record.ts";
import { decodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

const server = createMemoryServer();
const runtimes: Runtime[] = [];
afterEach(async () => {
  for (const rt of runtimes.splice(0).reverse()) await rt.stop();
});

/** The record as the server holds it. */
const stored = (id: string): JobRecord | undefined => {
  const entry = memoryServerState(server).records.get("test.read", id);
  return entry?.value === undefined ? undefined : decodeRecord(entry.value);
};

it("a supervisor whose end's write finds a cancel written from fewer answers raises the counts onto it", async () => {
  const release = gate();
  let heldEnds = 0;
  // The supervisor's end writes wait until the cancel is stored.
  const holdEnds = (inner: Broker) =>
    spiedBroker(inner, (key, _n, args, call) => {
      if (key !== "updateRecord" || !isFinal((args[0] as JobRecord).status)) return call();
      heldEnds++;
      return release.opened.then(call);
    }).broker;
  const supervisor = await createRuntime({
    logger: silentLogger(),
    broker: holdEnds(createMemoryBroker({ server })),
  });
  runtimes.push(supervisor);
  const answered = new Set<number>();
  const worker = supervisor.workers.start<{ n: number }, number>({
    queue: "endmeetscancel",
    handler: (task) => {
      answered.add(task.payload.n);
      return task.payload.n;
    },
  });
  try {
    const job = await supervisor.jobs.submit({
      queue: "endmeetscancel",
      tasks: Array.from({ length: 12 }, (_, n) => ({ n })),
    });
    await waitUntil(() => heldEnds > 0, { timeoutMs: 10_000, message: "the supervisor's end write" });
    expect(answered.size).toBe(12);
    // Another runtime's cancel, from a view that counted none of the answers.
    const raw = createMemoryBroker({ server });
    const found = await raw.getRecord(job.id);
    expect(found?.record.status).toBe("running");
    const now = Date.now();
    await raw.updateRecord(
      {
        ...found!.record,
        status: "failed",
        reason: "cancelled: from elsewhere",
        counts: { done: 0, failed: 0, dead: 0 },
        updatedAt: Math.max(now, found!.record.updatedAt + 1),
        finishedAt: now,
      },
      found!.revision,
    );
    release.open();
    // The supervisor answers with the end as recorded, and the answers it counted.
    expect(await job.done()).toMatchObject({
      status: "failed",
      reason: "cancelled: from elsewhere",
      done: 12,
    });
    await waitUntil(() => stored(job.id)?.counts.done === 12, {
      timeoutMs: 5000,
      message: "the record's counts are the answers the supervisor counted",
    });
    expect(stored(job.id)).toMatchObject({
      status: "failed",
      reason: "cancelled: from elsewhere",
      counts: { done: 12, failed: 0, dead: 0 },
    });
  } finally {
    release.open();
    await worker.stop();
  }
}, 30_000);
