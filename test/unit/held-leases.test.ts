/**
 * The heartbeat that renews a runtime's leases (src/adapters/held-leases.ts),
 * on a manual clock: a heartbeat answered after the last one ran out must not
 * carry a lease whose own `until` ran out meanwhile (another runtime may have
 * taken the job in the gap), and on NATS the time the heartbeat waited for a
 * connection counts toward how late it was answered. The NATS leases run
 * against a KV of the test's own (a map with revisions) behind a broker whose
 * operations wait as long as the test says, as one waits for a reconnect.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { HeldLeases, leaseUntilFor } from "../../src/adapters/held-leases.ts";
import type { NatsJobBroker } from "../../src/adapters/nats/job-broker.ts";
import { NatsJobLeases } from "../../src/adapters/nats/job-leases.ts";
import type { NatsContext } from "../../src/adapters/nats/nats-context.ts";
import { aheadOfServerAtMost, ManualClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

afterEach(() => {
  vi.restoreAllMocks();
});

const leaseMs = 10_000;

describe("HeldLeases", () => {
  it("a heartbeat after a gap carries only the leases whose own until still holds", () => {
    const held = new HeldLeases();
    held.wrote("old", 1, 10_000); // taken at 0
    held.beat(10_000, 1, 0, true); // answered at 0: carries it
    expect(held.coveredByHeartbeat("old", 5_000)).toBe(true);
    held.wrote("new", 2, 19_000); // taken at 9,000
    // Answered at 11,000: the heartbeat that ran out at 10,000 left a gap.
    held.beat(21_000, 3, 11_000, true);
    expect(held.holds("old", 11_000)).toBe(false); // another runtime may hold it now
    expect(held.holds("new", 11_000)).toBe(true); // its own until held across the gap
    expect(held.coveredByHeartbeat("new", 20_000)).toBe(true);
  });

  it("a heartbeat whose key was not ours any more carries no lease (a store lost with it)", () => {
    const held = new HeldLeases();
    held.wrote("j", 1, 10_000);
    held.beat(10_000, 1, 0, true);
    held.beat(13_000, 7, 3_000, false);
    expect(held.coveredByHeartbeat("j", 3_000)).toBe(false);
    expect(held.holds("j", 10_000)).toBe(false);
  });
});

describe("aheadOfServerAtMost: another's lease read on this runtime's clock", () => {
  // A reading whose consumer the server made 1.5 s into its read (a slow request to a loaded
  // server): its stamp is 1.5 s later than the server's time when the read began. A lease of
  // 2 s written (stamped) 0.1 s before the read began, read 1.6 s after it: live until 0.4 s
  // from now. Without the round trip counted in, the clock read 1.5 s less ahead, the lease
  // run out 1.1 s ago.
  it("never reads a live lease as run out for a reading's slow answer; late by its round trip at most", () => {
    const serverAtRead = 1_000_000;
    // performance.now() held still: the test judges the arithmetic, not how long it took to run.
    const monotonicNow = 50_000;
    vi.spyOn(performance, "now").mockReturnValue(monotonicNow);
    const seenAt = monotonicNow - 1600; // the read began 1.6 s ago
    const seen = { at: serverAtRead + 1500, seenAt, roundTripMs: 1500 };
    const now = serverAtRead + 1600; // this runtime's clock is the server's
    const lease = { v: 1 as const, holder: "h", until: 5000, at: 3000 }; // a 2 s span
    const until = leaseUntilFor(lease, serverAtRead - 100, aheadOfServerAtMost(now, seen));
    expect(until).toBeGreaterThan(now);
    expect(until - (serverAtRead - 100 + 2000)).toBeLessThanOrEqual(1500);
    // The same reading exact (no round trip): the span as the server counts it.
    const exact = leaseUntilFor(
      lease,
      serverAtRead - 100,
      aheadOfServerAtMost(now, { at: serverAtRead, seenAt }),
    );
    expect(exact).toBe(serverAtRead - 100 + 2000);
  });
});

describe("NatsJobLeases.heartbeat", () => {
  /** A KV of the test's own: create, update on the revision, get. */
  const memoryKv = () => {
    const entries = new Map<string, { value: string; revision: number }>();
    let revision = 0;
    return {
      create: async (key: string, value: string) => {
        if (entries.has(key)) throw new Error(`exists: ${key}`);
        entries.set(key, { value, revision: ++revision });
        return revision;
      },
      update: async (key: string, value: string, expected: number) => {
        if (entries.get(key)?.revision !== expected) throw new Error(`wrong revision: ${key}`);
        entries.set(key, { value, revision: ++revision });
        return revision;
      },
      get: async (key: string) => {
        const entry = entries.get(key);
        return entry && { operation: "PUT", revision: entry.revision, json: () => JSON.parse(entry.value) };
      },
    };
  };

  /**
   * Runtime A's NATS leases over the test's KV, on a manual clock; each
   * operation first runs `beforeOp` (a wait for a connection, a failure).
   */
  const natsLeases = (beforeOp: (name: string, clock: ManualClock) => void) => {
    const clock = new ManualClock(0);
    const kv = memoryKv();
    const broker = {
      setups: { once: () => async () => kv },
      names: { leasesBucket: "leases" },
      // A lease's first write: a create, as `kv.create` tries it.
      writeKey: (_nc: unknown, _bucket: string, key: string, value: string, previous: number) =>
        previous === 0 ? kv.create(key, value) : kv.update(key, value, previous),
      run: async <A>(name: string, op: (nc: unknown) => Promise<A>) => {
        beforeOp(name, clock);
        return op({});
      },
    } as unknown as NatsJobBroker;
    const core = {
      clock,
      logger: silentLogger(),
      stopping: new AbortController().signal,
    } as unknown as NatsContext;
    return { clock, kv, leases: new NatsJobLeases(core, broker, "A") };
  };

  it("counts the wait for a connection: a heartbeat that lands after its predecessor ran out carries nothing", async () => {
    /** How long the next operation waits for a connection before it runs. */
    let waitMs = 0;
    const { clock, leases } = natsLeases((_name, clock) => {
      clock.advance(waitMs);
      waitMs = 0;
    });

    expect(await leases.acquire("J", leaseMs, clock.now())).toBe(true);
    await leases.heartbeat(leaseMs, clock.now()); // answered at once: J is carried, until 10,000
    clock.advance(9_000);
    expect(leases.coveredByHeartbeat("J")).toBe(true);
    // Asked at 9,000 (in time), answered at 11,000 after waiting for a reconnect: meanwhile the
    // heartbeat that covered J ran out, and another runtime may have taken J over.
    waitMs = 2_000;
    await leases.heartbeat(leaseMs, clock.now());
    expect(clock.now()).toBe(11_000);
    expect(leases.holds("J")).toBe(false);
    expect(leases.coveredByHeartbeat("J")).toBe(false);
  });

  it("writes a give-back that failed with the next heartbeat, which would otherwise keep the lease alive", async () => {
    let failNext = false;
    const { clock, kv, leases } = natsLeases((name) => {
      if (!failNext) return;
      failNext = false;
      throw new Error(`${name}: no answer (NATS down)`);
    });
    expect(await leases.acquire("J", leaseMs, clock.now())).toBe(true);
    expect(await leases.acquire("K", leaseMs, clock.now())).toBe(true);
    const until = async (key: string) => (await kv.get(key))?.json().until as number;

    failNext = true;
    await leases.giveBack("J"); // not written: J still says A, until 10,000
    expect(await until("J")).toBe(leaseMs);
    // A still holds K, so its heartbeat goes on; without the owed write, J would stay alive with it.
    await leases.heartbeat(leaseMs, clock.now());
    expect(await until("J")).toBe(0);
    expect(leases.holds("J")).toBe(false);
    expect(leases.holds("K")).toBe(true);
  });
});
