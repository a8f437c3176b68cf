import { describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { limitedFirstJob } from "../harness/held-ledger.ts";
import { useStoreResetPool } from "../harness/store-reset-pool.ts";
import { useTwoNatsRuntimes } from "../harness/two-runtimes.ts";
import { within } from "../harness/wait.ts";

const names = brokerNames("jetstate");
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("a queue's permits stream deleted by hand under two runtimes", () => {
  const two = useTwoNatsRuntimes();

  /** The permits the pool's subject holds, as the server counts them (held or free). */
  const permitsOf = async (queue: string): Promise<number> => {
    const subject = names.permitsSubject(queue, "concurrency");
    const info = await two.jsm.streams.info(names.permitsStream, { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  };

  it("the next job's tasks all run, at most maxConcurrency at once, and the pool holds N again (not 2N)", async () => {
    const queue = "stream_gone";
    const { a, b, jsm } = two;
    await a.queues.configure(queue, { maxConcurrency: 2 });
    const { ledger, ran, runThrough, workers } = await limitedFirstJob([a, b], queue, 2);
    expect(await permitsOf(queue)).toBe(2);

    await jsm.streams.delete(names.permitsStream);
    const tasks = range(8).map((n) => n + 100);
    const next = await b.jobs.submit({ queue, tasks, ackWaitMs: 20_000 });
    await runThrough(tasks, 2, 30_000);
    expect(await within(next.done(), 20_000)).toMatchObject({ status: "succeeded", done: 8, total: 8 });
    for (const w of workers) await w.stop();
    expect({ ran: ran.size, most: ledger.most, permits: await permitsOf(queue) }).toEqual({
      ran: 12,
      most: 2,
      permits: 2,
    });
  }, 90_000);
});

// The server back with an empty store takes the queue's record with its permits: the runtime
// that configured it writes it back (queue-limits-store-reset.test.ts), and its work must run.
describe("a queue's permits lost with the server's store", () => {
  const env = useStoreResetPool();

  it("the next job's tasks all run, on the queue's limits written back", async () => {
    const queue = "store_gone";
    const [a, b] = [await env.runtimes.runtime("a"), await env.runtimes.runtime("b")];
    await a.queues.configure(queue, { maxConcurrency: 2 });
    const ran = new Set<number>();
    const handler = (task: { payload: number }) => {
      ran.add(task.payload);
      return task.payload;
    };
    const workers = [
      a.workers.start<number, number>({ queue, concurrency: 4, handler }),
      b.workers.start<number, number>({ queue, concurrency: 4, handler }),
    ];
    const first = await a.jobs.submit({ queue, tasks: range(4) });
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });

    await env.server.restartEmpty();
    const tasks = range(8).map((n) => n + 100);
    const next = await b.jobs.submit({ queue, tasks });
    expect(await within(next.done(), 30_000)).toMatchObject({ status: "succeeded", done: 8, total: 8 });
    expect(ran.size).toBe(12);
    for (const w of workers) await w.stop();
  }, 90_000);
});
