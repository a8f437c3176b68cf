/**
 * A host suspended (a VM paused or migrated, a laptop asleep) stops
 * `performance.now()`: Linux's CLOCK_MONOTONIC, which Node reads, does not
 * count the time suspended; the wall clock is right again on resume. To the
 * runtime it looks like its wall clock set forward, its monotonic clock
 * still. The server and every other runtime lived through the whole pause:
 * a lease written before it ran out for them long ago, and another runtime
 * may have taken the job over. The oracle is the test's ledger of the
 * server's time (the host's wall clock, right again on resume) and its own
 * KV; the holder's leases run on a manual clock.
 */
import { JetStreamApiError } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import type { NatsJobBroker } from "../../src/adapters/nats/job-broker.ts";
import { NatsJobLeases } from "../../src/adapters/nats/job-leases.ts";
import type { NatsContext } from "../../src/adapters/nats/nats-context.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

const leaseMs = 10_000;

describe("a holder whose host was suspended a minute", () => {
  it("does not hold, on resume, a lease the server's time ran out long ago", async () => {
    const clock = new ManualClock(0);
    const entries = new Map<string, { value: string; revision: number; storedAt: number }>();
    let revision = 0;
    const kv = {
      create: async (key: string, value: string) => {
        if (entries.has(key))
          throw new JetStreamApiError({ code: 400, err_code: 10071, description: "wrong last sequence" });
        entries.set(key, { value, revision: ++revision, storedAt: clock.now() });
        return revision;
      },
      update: async (key: string, value: string, expected: number) => {
        if (entries.get(key)?.revision !== expected)
          throw new JetStreamApiError({ code: 400, err_code: 10071, description: "wrong last sequence" });
        entries.set(key, { value, revision: ++revision, storedAt: clock.now() });
        return revision;
      },
    };
    const broker = {
      setups: { once: () => async () => kv },
      names: { leasesBucket: "leases" },
      writeKey: (_nc: unknown, _bucket: string, key: string, value: string, previous: number) =>
        previous === 0 ? kv.create(key, value) : kv.update(key, value, previous),
      run: async <A>(_name: string, op: (nc: unknown) => Promise<A>) => op({}),
    } as unknown as NatsJobBroker;
    const core = { clock, logger: silentLogger(), stopping: new AbortController().signal };
    const leases = new NatsJobLeases(core as unknown as NatsContext, broker, "A");

    expect(await leases.acquire("J", leaseMs, clock.now())).toBe(true);
    await leases.heartbeat(leaseMs, clock.now());
    clock.advance(1_000);
    // Suspended 60 s: the server's time (and the wall clock, once resumed) went on, the
    // monotonic clock did not.
    clock.step(60_000);
    const serverNow = clock.now();
    const lastStored = Math.max(...[...entries.values()].map((e) => e.storedAt));
    expect(serverNow - lastStored, "run out on the server's time, lease and heartbeat").toBeGreaterThan(
      leaseMs,
    );
    expect(leases.holds("J")).toBe(false);
  });
});
