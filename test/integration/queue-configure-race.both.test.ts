/**
 * Two `rt.queues.configure()` calls of one queue at once (every replica of a
 * service configures its queues at boot): once both have returned, the
 * queue's pool holds the permits of the record written last, no more. The
 * interleavings are made, not hoped for: one writer's controls are wrapped
 * to hold it between its record and its pool, or (NATS) between its look
 * at the record and its purge, or between the purge and its publishes. The
 * oracle is the pool as the backend holds it: on NATS the permits stream's
 * count on the pool's subject, read by the test's own client; in memory
 * the server's pool, emptied by hand.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection, TimeoutError } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMemoryBroker } from "../../src/adapters/memory/memory-broker.ts";
import { createMemoryServer, memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { QueueControls } from "../../src/adapters/queue-controls.ts";
import { type Queues, queuesFace } from "../../src/api/queues.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { heldBeforePool } from "../harness/held-controls.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

let server: NatsServerHandle;
let raw: NatsConnection;
beforeAll(async () => {
  server = await startNatsServer();
  raw = await connect({ servers: server.url });
});
afterAll(async () => {
  await raw?.close();
  await server?.dispose();
});

const admin = new Set(["admin"] as const);

/** One replica: its queue controls (which the test may wrap) and, on NATS, its client. */
interface Replica {
  readonly controls: QueueControls;
  /** The replica's connected client (NATS only). */
  client?(): Promise<NatsConnection>;
}

interface Backend {
  replica(): Promise<Replica>;
  /** How many permits the pool of `kind` of `queue` holds, read without the library. */
  permits(queue: string, kind: "concurrency" | "rate"): Promise<number>;
  dispose(): Promise<void>;
}

const backends: Array<{ name: "memory" | "nats"; make(): Backend }> = [
  {
    name: "memory",
    make: () => {
      const memory = createMemoryServer();
      const brokers: Array<ReturnType<typeof createMemoryBroker>> = [];
      return {
        replica: async () => {
          const broker = createMemoryBroker({ server: memory });
          brokers.push(broker);
          return { controls: broker.queueControls };
        },
        // Emptied by hand: every free permit taken at once (none is held: no worker runs).
        permits: async (queue, kind) =>
          memoryServerState(memory).permitPool(queue, kind).takeFree(1_000_000).length,
        dispose: async () => {
          for (const broker of brokers) await broker.close();
        },
      };
    },
  },
  {
    name: "nats",
    make: () => {
      const stops: Array<() => Promise<void>> = [];
      return {
        replica: async () => {
          const core = await createRuntimeCore({ servers: server.url, logger: silentLogger() });
          const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "race" });
          stops.push(async () => {
            await broker.close();
            await core.stop();
          });
          return {
            controls: broker.queueControls,
            client: async () => {
              await waitUntil(() => core.connection.current() !== undefined, {
                timeoutMs: 5000,
                message: "the replica connected",
              });
              return core.connection.current() as NatsConnection;
            },
          };
        },
        permits: async (queue, kind) => {
          const jsm = await jetstreamManager(raw);
          const subject = `jetstate.permits.${queue}.${kind}`;
          const info = await jsm.streams.info("jetstate_permits", { subjects_filter: subject });
          return info.state.subjects?.[subject] ?? 0;
        },
        dispose: async () => {
          for (const stop of stops) await stop();
        },
      };
    },
  },
];

const natsBackend = backends[1] as (typeof backends)[number];

const face = (controls: QueueControls): Queues => queuesFace(controls, admin, () => Date.now());

describe.each(backends)("concurrent configure() on $name", ({ make }) => {
  let backend: Backend;
  beforeAll(() => {
    backend = make();
  });
  afterAll(async () => {
    await backend.dispose();
  });

  it("four configures at once of one limit leave one pool of that limit", async () => {
    const replicas = await Promise.all([1, 2, 3, 4].map(() => backend.replica()));
    await Promise.all(replicas.map((r) => face(r.controls).configure("boot", { maxConcurrency: 3 })));
    expect(await backend.permits("boot", "concurrency")).toBe(3);
  });

  it("a configure whose record lost rewrites its pool last: the pool is the record's limit", async () => {
    const [a, b] = [await backend.replica(), await backend.replica()];
    const release = gate();
    const held = heldBeforePool(a.controls, release.opened);
    // A writes its record (2), then waits before its pool; B writes over it (3) and rewrites the pool.
    const first = face(held.controls).configure("late", { maxConcurrency: 2 });
    await held.reached;
    await face(b.controls).configure("late", { maxConcurrency: 3 });
    release.open();
    await first;
    expect((await face(b.controls).get("late")).maxConcurrency).toBe(3);
    expect(await backend.permits("late", "concurrency")).toBe(3);
  });

  it("a pause, or a change of the other limit, meanwhile does not overtake a pool's rewrite", async () => {
    const [a, b] = [await backend.replica(), await backend.replica()];
    await face(b.controls).configure("kept", { ratePerSecond: 7 });
    const release = gate();
    const held = heldBeforePool(a.controls, release.opened);
    const first = face(held.controls).configure("kept", { maxConcurrency: 2 });
    await held.reached;
    await face(b.controls).pause("kept");
    await face(b.controls).configure("kept", { ratePerSecond: 4 });
    release.open();
    await first;
    expect(await face(b.controls).get("kept")).toMatchObject({
      paused: true,
      maxConcurrency: 2,
      ratePerSecond: 4,
    });
    expect(await backend.permits("kept", "concurrency")).toBe(2);
    expect(await backend.permits("kept", "rate")).toBe(4);
  });
});

describe("concurrent configure() on nats, the permits' lease", () => {
  let backend: Backend;
  beforeAll(() => {
    backend = natsBackend.make();
  });
  afterAll(async () => {
    await backend.dispose();
  });

  /** The ack wait of the queue's pools' consumers (the permits' lease at the server), read raw. */
  const ackWaits = async (queue: string) => {
    const jsm = await jetstreamManager(raw);
    return Promise.all(
      (["concurrency", "rate"] as const).map(
        async (kind) =>
          ((await jsm.consumers.info("jetstate_permits", `${kind}_${queue}`)).config.ack_wait ?? 0) / 1e6,
      ),
    );
  };

  it.each([
    ["a limit", { maxConcurrency: 1 }],
    ["another lease", { maxConcurrency: 1, permitLeaseMs: 20_000 }],
  ])(
    "a configure of %s overtaken by a lease's change leaves the record's lease on the pools",
    async (_, limits) => {
      const queue = `leaserace${Object.keys(limits).length}`;
      const [a, b] = [await backend.replica(), await backend.replica()];
      await face(b.controls).configure(queue, { maxConcurrency: 1, ratePerSecond: 5 });
      const release = gate();
      const held = heldBeforePool(a.controls, release.opened);
      // A writes its record, then waits before its pool; B writes over it and sets the lease.
      const first = face(held.controls).configure(queue, limits);
      await held.reached;
      await face(b.controls).configure(queue, { permitLeaseMs: 60_000 });
      release.open();
      await first;
      // Every taker holds for the record's lease: the server must keep a silent holder's permit that long.
      expect((await face(b.controls).get(queue)).permitLeaseMs).toBe(60_000);
      expect(await ackWaits(queue)).toEqual([60_000, 60_000]);
    },
  );
});

describe("a taker's lease on nats, when the record says longer than the pool's consumer", () => {
  let backend: Backend;
  beforeAll(() => {
    backend = natsBackend.make();
  });
  afterAll(async () => {
    await backend.dispose();
  });

  it("holds for the consumer's shorter one, though it saw the longer one on the consumer before", async () => {
    const queue = "staleLease";
    const [admin1, taker, other] = [
      await backend.replica(),
      await backend.replica(),
      await backend.replica(),
    ];
    // A configure whose lease never reached the consumer (a crash between the record and the consumer).
    const crashed = new Proxy(admin1.controls, {
      get: (target, key, receiver) =>
        key === "setPermitLease" ? async () => undefined : Reflect.get(target, key, receiver),
    });
    const take = (controls: QueueControls, leaseMs: number, waitMs = 3000) =>
      controls.takePermit(queue, "concurrency", AbortSignal.timeout(waitMs), leaseMs);
    await face(admin1.controls).configure(queue, { maxConcurrency: 1, permitLeaseMs: 60_000 });
    // The taker has seen the pool's consumer at 60 s, then at 5 s.
    (await take(taker.controls, 60_000))?.release();
    await face(admin1.controls).configure(queue, { permitLeaseMs: null });
    (await take(taker.controls, 5000))?.release();
    await face(crashed).configure(queue, { permitLeaseMs: 60_000 });
    // The record says 60 s, the consumer 5 s: the server hands a permit kept silent for 5 s to another.
    const held = await take(taker.controls, 60_000);
    expect(held).toBeDefined();
    const next = await take(other.controls, 60_000, 9000);
    expect(next).toBeDefined();
    // Its holder knows it lost it: its give-back must not free the permit the other holds now.
    held?.release();
    expect(await take(other.controls, 60_000, 2500)).toBeUndefined();
    next?.release();
  }, 30_000);
});

describe("concurrent configure() on nats, inside a pool's rewrite", () => {
  let backend: Backend;
  beforeAll(() => {
    backend = natsBackend.make();
  });
  afterAll(async () => {
    await backend.dispose();
  });

  /**
   * Two replicas, A's publishes of `queue`'s concurrency permits held at its client until
   * `release` opens (`reached` opens at the first); the rest of A goes on. `answered(n)` runs once
   * the n-th is stored, and may throw: its answer lost.
   */
  const heldPublishes = async (queue: string, answered?: (n: number) => void) => {
    const [a, b] = [await backend.replica(), await backend.replica()];
    const nc = await a.client?.();
    if (!nc) throw new Error("no client");
    const subject = `jetstate.permits.${queue}.concurrency`;
    const release = gate();
    const reached = gate();
    let sent = 0;
    const request = nc.request.bind(nc);
    nc.request = async (...args: Parameters<NatsConnection["request"]>) => {
      if (args[0] !== subject) return request(...args);
      reached.open();
      await release.opened;
      const answer = await request(...args);
      answered?.(++sent);
      return answer;
    };
    return { a, b, held: { release, reached, sent: () => sent } };
  };

  it("a configure held between its look at the record and its purge, another meanwhile: the later record's pool", async () => {
    const [a, b] = [await backend.replica(), await backend.replica()];
    const release = gate();
    const reached = gate();
    // A's first read of the record after writing it (it finds its round there) returns only once
    // B has written its record and its pool: A then purges and publishes after B's permits.
    let written = false;
    let held = false;
    const controls = new Proxy(a.controls, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (typeof value !== "function") return value;
        return async (...args: unknown[]) => {
          const result = await value.apply(target, args);
          if (key === "writeSettings") written = true;
          if (key === "getSettings" && written && !held) {
            held = true;
            reached.open();
            await release.opened;
          }
          return result;
        };
      },
    });
    const first = face(controls).configure("looked", { maxConcurrency: 2 });
    // A call that never reads the record after writing it is not held here: say so, not time out.
    expect(await within(reached.opened, 5000), "A read its record after writing it").not.toBe("never");
    await face(b.controls).configure("looked", { maxConcurrency: 3 });
    release.open();
    await first;
    expect(await backend.permits("looked", "concurrency")).toBe(3);
  });

  // A's publishes wait at its client until B has written its record and its pool, then land after
  // B's permits; the answer to A's second is lost (stored all the same), so A's operation is tried
  // again, finds B's record the pool's, and takes its permits back: the one whose answer was lost
  // too, whose sequence it never heard (before, it stayed: 4 permits at B's limit of 3).
  it("a configure overtaken while one of its publishes was stored but its answer lost: the later record's pool", async () => {
    const { a, b, held } = await heldPublishes("lostack", (n) => {
      if (n === 2) throw new TimeoutError();
    });
    const first = face(a.controls).configure("lostack", { maxConcurrency: 2 });
    await held.reached.opened;
    await face(b.controls).configure("lostack", { maxConcurrency: 3 });
    held.release.open();
    await first;
    expect(held.sent()).toBeGreaterThanOrEqual(2);
    expect((await face(b.controls).get("lostack")).maxConcurrency).toBe(3);
    expect(await backend.permits("lostack", "concurrency")).toBe(3);
  });

  it.each<[number, number | null]>([
    [2, 2],
    [2, 3],
    [3, 2],
    [2, null],
  ])(
    "a configure (%s) held between its purge and its publishes, another (%s) meanwhile: the later record's pool",
    async (held, later) => {
      const queue = `mid${held}${later ?? "lifted"}`;
      const { a, b, held: publishes } = await heldPublishes(queue);
      const first = face(a.controls).configure(queue, { maxConcurrency: held });
      await publishes.reached.opened;
      await face(b.controls).configure(queue, { maxConcurrency: later });
      publishes.release.open();
      await first;
      expect((await face(b.controls).get(queue)).maxConcurrency).toBe(later ?? undefined);
      expect(await backend.permits(queue, "concurrency")).toBe(later ?? 0);
    },
  );
});
