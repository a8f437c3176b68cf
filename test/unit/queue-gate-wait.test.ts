/**
 * A permit is leased (5 s on NATS) and renewed by its holder. A task that
 * holds its concurrency permit and waits for a rate permit (or for the
 * queue's slot after its target's) must renew what it holds meanwhile, or
 * the permit goes to another task and the limit is exceeded. The memory
 * controls under a spy: the rate permit is held back until the concurrency
 * permit's renewal is seen (4 s at most); the renewals are counted.
 */
import { describe, expect, it } from "vitest";
import type { Permit, QueueControls } from "../../src/adapters/queue-controls.ts";
import { QueueGate } from "../../src/api/queue-gate.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { encodeQueueSettings } from "../../src/kernel/queue-settings.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { waitUntil } from "../harness/wait.ts";

const waitFor = (check: () => boolean) =>
  waitUntil(check, { timeoutMs: 5000, message: "the take asked for" });

/**
 * A gate whose first read of the settings answers when the test says
 * (`stored`), and whose watch hands over what the test pushes.
 */
const gateReadLater = () => {
  let stored!: (found: { value: string; revision: number } | undefined) => void;
  let push!: (value: string | undefined, revision: number) => void;
  const controls = {
    getSettings: () =>
      new Promise<{ value: string; revision: number } | undefined>((resolve) => {
        stored = resolve;
      }),
    watchSettings: (_queue: string, onValue: typeof push, signal: AbortSignal) => {
      push = onValue;
      return new Promise<void>((resolve) =>
        signal.addEventListener("abort", () => resolve(), { once: true }),
      );
    },
  } as Partial<QueueControls> as QueueControls;
  const stop = new AbortController();
  const gate = new QueueGate(controls, "q", silentLogger(), stop.signal);
  return { gate, stored, push, stop };
};

/** The settings of queue "q", paused or not, as stored. */
const written = (paused: boolean) => encodeQueueSettings({ queue: "q", paused, updatedAt: 0 });

describe("a task waiting for its next permit", () => {
  it("renews the permits it already holds", { timeout: 10_000 }, async () => {
    const inner = createMemoryBroker({ server: createMemoryServer() }).queueControls;
    let kept = 0;
    /** Renewals of the concurrency permit seen while the rate permit was still held back. */
    let keptWhileWaiting: number | undefined;
    const controls: QueueControls = new Proxy(inner, {
      get(target, key, receiver) {
        if (key !== "takePermit") return Reflect.get(target, key, receiver);
        return async (...args: Parameters<QueueControls["takePermit"]>): Promise<Permit | undefined> => {
          const permit = await target.takePermit(...args);
          if (args[1] === "rate") {
            // The rate permit comes once the concurrency permit was renewed meanwhile, or after 4 s
            // (under its 5 s lease: not renewed by then, it would go to another task).
            await waitUntil(() => kept > 0, {
              timeoutMs: 4000,
              message: "the held concurrency permit renewed",
            }).catch(() => undefined);
            keptWhileWaiting = kept;
            return permit;
          }
          return (
            permit && {
              keep: () => {
                kept += 1;
                permit.keep();
              },
              release: permit.release,
            }
          );
        };
      },
    });
    const queue = "waits";
    await controls.writeSettings(
      queue,
      encodeQueueSettings({ queue, paused: false, maxConcurrency: 2, ratePerSecond: 5, updatedAt: 0 }),
      undefined,
    );
    await controls.setPermits(queue, "concurrency", 2);
    await controls.setPermits(queue, "rate", 5);
    const stop = new AbortController();
    const gate = new QueueGate(controls, queue, silentLogger(), stop.signal);
    const pass = await gate.enter(stop.signal);
    expect(pass).toBeTypeOf("object");
    // Renewed at least once (every third of the lease) while the rate permit was waited for, not
    // only once the wait was over.
    expect(keptWhileWaiting).toBeGreaterThanOrEqual(1);
    if (typeof pass === "object") pass.end();
    stop.abort();
  });
});

describe("a task waiting for its agent target's rate permit", () => {
  it("holds none of its queue's permits meanwhile (the workers of other targets may take them)", async () => {
    const inner = createMemoryBroker({ server: createMemoryServer() }).queueControls;
    const taken: string[] = [];
    let rateComes!: () => void;
    const targetRate = new Promise<void>((resolve) => {
      rateComes = resolve;
    });
    const controls: QueueControls = new Proxy(inner, {
      get(target, key, receiver) {
        if (key === "takePermit")
          return async (...args: Parameters<QueueControls["takePermit"]>) => {
            taken.push(`queue ${args[1]}`);
            return target.takePermit(...args);
          };
        if (key === "takeTargetPermit")
          return async (...args: Parameters<QueueControls["takeTargetPermit"]>) => {
            taken.push(`target ${args[2]}`);
            if (args[2] === "rate") await targetRate;
            return target.takeTargetPermit(...args);
          };
        return Reflect.get(target, key, receiver);
      },
    });
    const queue = "per-target";
    await controls.writeSettings(
      queue,
      encodeQueueSettings({
        queue,
        paused: false,
        maxConcurrency: 2,
        perTarget: { ratePerSecond: 1, maxConcurrency: 4, round: "r1" },
        updatedAt: 0,
      }),
      undefined,
    );
    await controls.setPermits(queue, "concurrency", 2);
    const stop = new AbortController();
    const gate = new QueueGate(controls, queue, silentLogger(), stop.signal);
    const entering = gate.enter(stop.signal, undefined, "https://a.example");
    await waitFor(() => taken.includes("target rate"));
    // Waiting for the target's rate permit: the queue's concurrency permit not taken yet.
    expect(taken).toEqual(["target concurrency", "target rate"]);
    rateComes();
    const pass = await entering;
    expect(taken).toEqual(["target concurrency", "target rate", "queue concurrency"]);
    if (typeof pass === "object") pass.end();
    stop.abort();
  });
});

describe("the settings a gate applies", () => {
  it("after a store reset: a revision that goes back, or an equal one that says otherwise, is applied", async () => {
    const { gate, stored, push, stop } = gateReadLater();
    // Never configured: its first read finds nothing.
    stored(undefined);
    /** What a task arriving now meets: "paused", or a pass (given back at once). */
    const meets = async () => {
      const pass = await gate.enter(stop.signal);
      if (typeof pass === "object") {
        pass.end();
        return "pass";
      }
      return pass;
    };
    push(written(false), 3);
    expect(await meets()).toBe("pass");
    // The store made again: this queue's pause is written at the bucket's sequence 3 again.
    push(written(true), 3);
    expect(await meets()).toBe("paused");
    // The same write seen again changes nothing; a resume at a revision below is applied.
    push(written(true), 3);
    expect(await meets()).toBe("paused");
    push(written(false), 1);
    expect(await meets()).toBe("pass");
    stop.abort();
  });
});

describe("a task arriving before the gate has read its queue's settings", () => {
  it("meets the stored pause: no pass at once, and 'paused' once they are read", async () => {
    const { gate, stored, push, stop } = gateReadLater();
    // Not read yet: nothing says the queue is open.
    expect(gate.openPass()).toBeUndefined();
    const entering = gate.enter(stop.signal);
    stored({ value: written(true), revision: 1 });
    expect(await entering).toBe("paused");
    expect(gate.openPass()).toBeUndefined();
    // Resumed: a task passes at once, with no wait.
    push(written(false), 2);
    expect(gate.openPass()).toBeTypeOf("object");
    stop.abort();
  });
});

describe("a gate whose watch says open before its first read answers", () => {
  it("gives no pass at once until that read, which may say paused", async () => {
    const { gate, stored, push, stop } = gateReadLater();
    push(written(false), 1);
    expect(gate.openPass()).toBeUndefined();
    const entering = gate.enter(stop.signal);
    stored({ value: written(true), revision: 2 });
    expect(await entering).toBe("paused");
    stop.abort();
  });
});
