/**
 * The queue machine's generated paths (queue.paths.ts) replayed on real
 * runtimes, on the memory broker (sharing one memory server) and on NATS:
 * each event is made by the public API of an admin runtime (configure /
 * pause / resume), and after each the state the machine says is checked
 * against what a worker of another runtime does with a probe job of two
 * tasks whose handlers block: `open` starts both (the worker has two
 * slots), `limited` (maxConcurrency 1) exactly one, `paused` none. The
 * oracle is the handlers' own ledger.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";
import { events, queuePaths } from "./queue.paths.ts";

const paths = queuePaths();

interface Backend {
  readonly name: string;
  /** Two runtimes on one server: the admin's and the worker's. */
  start(): Promise<{ admin: Runtime; worker: Runtime; stop(): Promise<void> }>;
  /** Long enough for a start that should not come: the memory watch is synchronous, a KV watch is not. */
  readonly settleMs: number;
}

const backends: Backend[] = [
  {
    name: "memory",
    settleMs: 150,
    async start() {
      const server = createMemoryServer();
      const admin = await createTestRuntime({ name: "queue-admin", broker: createMemoryBroker({ server }) });
      const worker = await createTestRuntime({
        name: "queue-worker",
        broker: createMemoryBroker({ server }),
      });
      return {
        admin,
        worker,
        async stop() {
          await worker.stop();
          await admin.stop();
          server.close();
        },
      };
    },
  },
  {
    name: "nats",
    settleMs: 400,
    async start() {
      const nats: NatsServerHandle = await startNatsServer();
      const open = (name: string) => createRuntime({ servers: nats.url, name, logger: silentLogger() });
      const admin = await open("queue-admin");
      const worker = await open("queue-worker");
      return {
        admin,
        worker,
        async stop() {
          await worker.stop();
          await admin.stop();
          await nats.dispose();
        },
      };
    },
  },
];

/** Starts the handlers a state lets start: open 2, limited 1, paused 0. */
const startsIn = { open: 2, limited: 1, paused: 0 } as Record<string, number>;

describe.each(backends)("queue machine paths on the runtime ($name)", (backend) => {
  let admin: Runtime;
  let workerRt: Runtime;
  let stop: () => Promise<void> = async () => undefined;
  beforeAll(async () => {
    ({ admin, worker: workerRt, stop } = await backend.start());
  });
  afterAll(() => stop());

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
        // The worker hears the write through its watch, within milliseconds when all is well: a
        // probe submitted before it did (a loaded machine) met the old settings (CI ran a probe
        // of a pause's path with two tasks started). Its gate's state, which it reports, is
        // waited for; what it then starts is the test.
        await waitUntil(() => worker.stats().queueState === state, {
          timeoutMs: 5000,
          message: `the worker to hear the queue ${state}`,
        });
        started.length = 0;
        block();
        const probe = await admin.jobs.submit({ queue, tasks: [0, 1] });
        const expected = startsIn[state] as number;
        if (expected > 0)
          await waitUntil(() => started.length >= expected, {
            timeoutMs: 3000,
            message: `${state}: ${expected} started`,
          });
        // Time for a start that should not come.
        await delay(backend.settleMs);
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
