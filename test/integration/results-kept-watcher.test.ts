/**
 * `results()` of a job whose actor kept its results messages: a watcher
 * (another runtime's actor for the job) can learn the job's end from the
 * record before its feed has handed it every answer. Its `results()` must
 * then read the server, not the few messages it kept. Runtime B's feed is
 * held here by a proxy on its broker until the end is recorded: the race
 * placed where it hurts.
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime } from "../../src/api/runtime.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";

describe("results() of a job a watcher saw end before reading its answers", () => {
  it("reads the stored answers, every one", { timeout: 15_000 }, async () => {
    const server = createMemoryServer();
    const a = await createTestRuntime({ name: "a", broker: createMemoryBroker({ server }) });
    // B's first results reader (its actor's feed) hands nothing until `release`.
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { broker } = spiedBroker(createMemoryBroker({ server }), (name, n, args, call) => {
      if (name !== "followResults" || n !== 1) return call();
      const onMessage = args[2] as (body: string, pending: number) => void;
      args[2] = (body: string, pending: number) => void released.then(() => onMessage(body, pending));
      return call();
    });
    const b = await createTestRuntime({ name: "b", broker, jobs: { takeOver: false } });
    try {
      const job = await a.jobs.submit<number, number>({ queue: "q", tasks: [1, 2, 3] });
      const watched = await b.jobs.get<number>(job.id);
      expect(watched).toBeDefined();
      const worker = a.workers.start<number, number>({ queue: "q", handler: (t) => t.payload * 10 });
      expect(await job.done()).toMatchObject({ status: "succeeded", done: 3 });
      // B learns the end from the record; its feed has handed no answer yet.
      expect(await watched!.done()).toMatchObject({ status: "succeeded", done: 3 });
      const read: number[] = [];
      for await (const r of watched!.results()) if (r.ok) read.push(r.result);
      expect(read.sort((x, y) => x - y)).toEqual([10, 20, 30]);
      release();
      await worker.stop();
    } finally {
      release();
      await b.stop();
      await a.stop();
    }
  });
});
