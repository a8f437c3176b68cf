/**
 * The queue machine's generated paths (queue.paths.ts) replayed on real
 * runtimes sharing one memory server: each event is made by the public API
 * of an admin runtime (configure / pause / resume), and after each the
 * state the machine says is checked against what a worker of another
 * runtime does with a probe job of two tasks whose handlers block: `open`
 * starts both (the worker has two slots), `limited` (maxConcurrency 1)
 * exactly one, `paused` none. The oracle is the handlers' own ledger.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../src/api/runtime.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { delay, waitUntil } from "../harness/wait.ts";
import { events, queuePaths } from "./queue.paths.ts";

const paths = queuePaths();
const server = createMemoryServer();
let admin: Runtime;
let workerRt: Runtime;

beforeAll(async () => {
  admin = await createTestRuntime({ name: "queue-admin", broker: createMemoryBroker({ server }) });
  workerRt = await createTestRuntime({ name: "queue-worker", broker: createMemoryBroker({ server }) });
});
afterAll(async () => {
  await workerRt?.stop();
  await admin?.stop();
  server.close();
});

/** Starts the handlers a state lets start: open 2, limited 1, paused 0. */
const startsIn = { open: 2, limited: 1, paused: 0 } as Record<string, number>;

describe("queue machine paths on the runtime (memory)", () => {
  it("covers every state and every event", () => {
    const reached = new Set(paths.flatMap((p) => p.states));
    expect([...reached].sort()).toEqual(["limited", "open", "paused"]);
    for (const e of events) expect(paths.some((p) => p.events.includes(e))).toBe(true);
  });

  it.each(paths.map((p, n) => [n, p.name, p] as const))("path %i: %s", async (n, _name, path) => {
    const queue = `qpath${n}`;
    const started: number[] = [];
    // A new blocker per probe: handlers of one probe run until the next step.
    let unblock: () => void = () => undefined;
    let blocked = Promise.resolve();
    const block = () => {
      blocked = new Promise<void>((resolve) => {
        unblock = resolve;
      });
    };
    const worker = workerRt.workers.start({
      queue,
      concurrency: 2,
      handler: async (task) => {
        started.push(task.index);
        await blocked;
        return "ok";
      },
    });
    try {
      for (const [i, event] of path.events.entries()) {
        // The write the event stands for, through the public API.
        await admin.queues.configure(queue, { maxConcurrency: event.limited ? 1 : null });
        await (event.paused ? admin.queues.pause(queue) : admin.queues.resume(queue));
        const state = path.states[i] as string;
        // The machine's state against what was written: paused wins, then a limit.
        expect(state).toBe(event.paused ? "paused" : event.limited ? "limited" : "open");
        started.length = 0;
        block();
        const probe = await admin.jobs.submit({ queue, tasks: [0, 1] });
        const expected = startsIn[state] as number;
        if (expected > 0)
          await waitUntil(() => started.length >= expected, {
            timeoutMs: 3000,
            message: `${state}: ${expected} started`,
          });
        // Time for a start that should not come (the memory watch is synchronous; tasks arrive at once).
        await delay(150);
        expect({ state, started: started.length }).toEqual({ state, started: expected });
        await probe.cancel("probe over");
        unblock();
      }
    } finally {
      unblock();
      await worker.stop();
    }
  });
});
