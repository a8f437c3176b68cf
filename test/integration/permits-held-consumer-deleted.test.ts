import { describe, expect, it } from "vitest";
import { brokerNames, permitsConsumer } from "../../src/adapters/names.ts";
import { useTwoNatsRuntimes } from "../harness/two-runtimes.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const names = brokerNames("jetstate");
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("held permits of a concurrency pool whose consumer is deleted by hand", () => {
  const two = useTwoNatsRuntimes();

  const exists = async (consumer: string): Promise<boolean> => {
    for await (const c of two.jsm.consumers.list(names.permitsStream)) if (c.name === consumer) return true;
    return false;
  };
  /** Waits for `check`; false when it did not come within `ms` (what the limit forbids may never come). */
  const cameWithin = (check: () => boolean, ms: number) =>
    waitUntil(check, { timeoutMs: ms, message: "" }).then(
      () => true,
      () => false,
    );

  it("no more handlers than maxConcurrency run at once once the old holders have ended (twice as many before)", async () => {
    const queue = "held_gone";
    const { a, b, jsm } = two;
    await a.queues.configure(queue, { maxConcurrency: 2, permitLeaseMs: 7000 });
    const gates = new Map(range(12).map((i) => [i, gate()]));
    const running = new Set<number>();
    let most = 0;
    let mostAfterOldHolders = 0;
    let oldHoldersEnded = false;
    const handler = async (task: { payload: number }) => {
      running.add(task.payload);
      most = Math.max(most, running.size);
      if (oldHoldersEnded) mostAfterOldHolders = Math.max(mostAfterOldHolders, running.size);
      await gates.get(task.payload)?.opened;
      running.delete(task.payload);
      return task.payload;
    };
    const workers = [
      a.workers.start<number, number>({ queue, concurrency: 4, handler }),
      b.workers.start<number, number>({ queue, concurrency: 4, handler }),
    ];
    const job = await a.jobs.submit({ queue, tasks: range(12), ackWaitMs: 20_000 });
    await waitUntil(() => running.size === 2, {
      timeoutMs: 20_000,
      message: "two handlers hold the permits",
    });
    const oldHolders = [...running];

    const consumer = permitsConsumer(queue, "concurrency");
    await jsm.consumers.delete(names.permitsStream, consumer);
    await waitUntil(() => exists(consumer), { timeoutMs: 15_000, message: `${consumer} made again` });
    // A third handler may start only if a held permit was handed out again.
    await cameWithin(() => running.size > 2, 10_000);

    // The holders of the deleted consumer's permits end: their give-backs must not hand on
    // permits whose new holders still run. From then on the ledger counts against the limit,
    // starting from the handlers running at that moment.
    for (const i of oldHolders) gates.get(i)?.open();
    await waitUntil(() => oldHolders.every((i) => !running.has(i)), {
      timeoutMs: 20_000,
      message: "the old holders ended",
    });
    oldHoldersEnded = true;
    mostAfterOldHolders = running.size;
    await cameWithin(() => running.size > 2, 10_000);
    const snapshot = { most, mostAfterOldHolders, runningThen: [...running].sort((x, y) => x - y) };

    for (const g of gates.values()) g.open();
    expect(await within(job.done(), 40_000)).toMatchObject({ status: "succeeded", done: 12 });
    for (const w of workers) await w.stop();
    // Each number over its bound is shown as it was; within it, as "≤ bound".
    const atMost = (bound: number, n: number) => (n <= bound ? `≤ ${bound}` : n);
    expect({
      most: atMost(4, snapshot.most),
      mostAfterOldHolders: atMost(2, snapshot.mostAfterOldHolders),
      runningThen: snapshot.runningThen.length <= 2 ? "≤ 2" : snapshot.runningThen,
    }).toEqual({ most: "≤ 4", mostAfterOldHolders: "≤ 2", runningThen: "≤ 2" });
  }, 120_000);
});
