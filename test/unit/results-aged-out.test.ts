/**
 * `results()` of a job over before the reader started: every answer was
 * stored before it, so once it has read what the stream still holds it
 * ends, even when some answers aged out of the results stream (its
 * retention) while the record, removed only by a later cleanup pass, still
 * counts them. It waited for them for good, and `rt.stop()` did not end
 * the wait either. The answers are removed here from the memory server's
 * results log (as its retention would); the oracle is that log and a bound.
 */
import { describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

const bounded = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([
    promise,
    new Promise<string>((resolve) => setTimeout(() => resolve(`no end in ${ms} ms`), ms)),
  ]);

describe("results() of a job whose answers aged out", () => {
  it("yields what is stored and ends", async () => {
    const server = createMemoryServer();
    const jobs = { reapIntervalMs: 0, cleanupIntervalMs: 0 };
    const a = await createRuntime({ broker: createMemoryBroker({ server }), logger: silentLogger(), jobs });
    a.workers.start<number, number>({ queue: "q", handler: (task) => task.payload * 2 });
    const job = await a.jobs.submit<number, number>({ queue: "q", tasks: [1, 2] });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 2 });
    await a.stop();
    const log = memoryServerState(server).results;
    log.purge(brokerNames("jetstate").resultsSubject("q", job.id));
    expect(log.read(brokerNames("jetstate").resultsSubject("q", job.id))).toHaveLength(0);

    const b = await createRuntime({ broker: createMemoryBroker({ server }), logger: silentLogger(), jobs });
    try {
      const seen = await b.jobs.get<number>(job.id);
      const read = (async () => {
        const answers: unknown[] = [];
        for await (const r of seen!.results()) answers.push(r);
        return answers;
      })();
      expect(await bounded(read, 2000)).toEqual([]);
    } finally {
      await bounded(b.stop(), 5000);
    }
  });
});
