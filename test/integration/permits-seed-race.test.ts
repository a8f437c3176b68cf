/**
 * A queue's pool seeded again by its takers (its permits lost with their
 * stream) at the same time as something else writes it: two takers seeding
 * at once, and a taker seeding while the `configure()` that wrote the
 * record has not yet written its pool. Either way the pool must end with
 * the record's N permits: not 2N, not none. The interleavings are made, not
 * hoped for (a seeder's read of the record, a configure's rewrite, each held
 * at a gate). The oracle: the permits stream's count on the pool's subject,
 * read by the test's own client.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { seedLostPermits } from "../../src/adapters/nats/permit-seeds.ts";
import type { QueueControls } from "../../src/adapters/queue-controls.ts";
import { queuesFace } from "../../src/api/queues.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { heldBeforePool } from "../harness/held-controls.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { gate, within } from "../harness/wait.ts";

const names = brokerNames("jetstate");

describe("a lost pool seeded by its takers while another writes it", () => {
  let server: NatsServerHandle;
  let raw: NatsConnection;
  const stops: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    server = await startNatsServer();
    raw = await connect({ servers: server.url, name: "raw" });
  });
  afterAll(async () => {
    for (const stop of stops) await stop();
    await raw?.close();
    await server?.dispose();
  });

  /** One replica's queue controls, on a client of its own. */
  const replica = async (): Promise<QueueControls> => {
    const core = await createRuntimeCore({ servers: server.url, logger: silentLogger() });
    const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "seeds" });
    stops.push(async () => {
      await broker.close();
      await core.stop();
    });
    return broker.queueControls;
  };
  const face = (controls: QueueControls) =>
    queuesFace(controls, new Set(["admin"] as const), () => Date.now());
  const permitsOf = async (queue: string): Promise<number> => {
    const subject = names.permitsSubject(queue, "concurrency");
    const info = await (await jetstreamManager(raw)).streams.info(names.permitsStream, {
      subjects_filter: subject,
    });
    return info.state.subjects?.[subject] ?? 0;
  };

  it("two takers seeding at once, both having found the pool empty: N permits, not 2N", async () => {
    const queue = "seed_twice";
    await face(await replica()).configure(queue, { maxConcurrency: 2 });
    const jsm = await jetstreamManager(raw);
    await jsm.streams.purge(names.permitsStream, { filter: names.permitsSubject(queue, "concurrency") });
    // A stream made again is empty and remembers no id: the seeds' ids are all that dedupe them.
    const stored = (await jsm.streams.info(names.permitsStream)).config;
    await jsm.streams.delete(names.permitsStream);
    await jsm.streams.add(stored);
    const kv = await new Kvm(raw).open(names.queuesBucket);
    const value = (await kv.get(queue))?.string();
    // Each seeder has found the pool empty before either reads the record and publishes.
    const bothLooked = gate();
    let looked = 0;
    const record = async () => {
      if (++looked === 2) bothLooked.open();
      await bothLooked.opened;
      return value;
    };
    const seed = () =>
      seedLostPermits(
        {
          js: jetstream(raw),
          jsm,
          stream: names.permitsStream,
          subject: names.permitsSubject(queue, "concurrency"),
          queue,
          kind: "concurrency",
          record,
        },
        silentLogger(),
      );
    // Both published the record's 2 (a seed says "seeded" when it published the pool again).
    expect(await Promise.all([seed(), seed()])).toEqual(["seeded", "seeded"]);
    expect(await permitsOf(queue)).toBe(2);
  });

  it("a taker seeding while the configure that wrote the record is held before its pool: N permits", async () => {
    const queue = "seed_beside_configure";
    const [a, b] = [await replica(), await replica()];
    const release = gate();
    const held = heldBeforePool(a, release.opened);
    const configured = face(held.controls).configure(queue, { maxConcurrency: 2 });
    await held.reached;
    // The record names the round and its N; the pool has no consumer yet: the taker makes it,
    // finds no permit, and seeds the round's first ids. The configure then purges what was
    // stored before its look (the seeds) and publishes the same ids.
    const permit = await b.takePermit(queue, "concurrency", AbortSignal.timeout(15_000));
    expect(permit, "the taker got a seeded permit").toBeDefined();
    permit?.release();
    release.open();
    expect(await within(configured, 20_000)).toMatchObject({ maxConcurrency: 2 });
    expect(await permitsOf(queue)).toBe(2);
  });
});
