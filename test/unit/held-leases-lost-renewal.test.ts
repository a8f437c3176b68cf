/**
 * A renewal whose write was stored but whose answer was lost (the connection
 * cut after the publish), then a wall clock set back (NTP), then the next
 * renewal: that one meets the lost write (a compare-and-set on a revision
 * gone) and reads it back as its own. How long the holder then holds must be
 * counted from the lost write, the one the server holds, which others read
 * the lease from. The test keeps its own KV and a ledger of when (on the
 * holder's monotonic clock) each write of the lease was stored.
 */
import { JetStreamApiError } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import type { NatsJobBroker } from "../../src/adapters/nats/job-broker.ts";
import { NatsJobLeases } from "../../src/adapters/nats/job-leases.ts";
import type { NatsContext } from "../../src/adapters/nats/nats-context.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

const leaseMs = 10_000;

/** As nats.js throws a lost compare-and-set. */
const wrongLastSequence = () =>
  new JetStreamApiError({ code: 400, err_code: 10071, description: "wrong last sequence" });

describe("NatsJobLeases.renew after a lost answer and a clock set back", () => {
  it("holds no longer than a lease after the write the server holds", async () => {
    const clock = new ManualClock(0);
    const entries = new Map<string, { value: string; revision: number }>();
    /** When each stored write of a key was stored, on the monotonic clock: the test's ledger. */
    const storedAt = new Map<string, number>();
    let revision = 0;
    const put = (key: string, value: string) => {
      entries.set(key, { value, revision: ++revision });
      storedAt.set(key, clock.monotonic());
      return revision;
    };
    /** The next update is stored, its answer lost. */
    let loseAnswer = false;
    const kv = {
      create: async (key: string, value: string) => {
        if (entries.has(key)) throw wrongLastSequence();
        return put(key, value);
      },
      update: async (key: string, value: string, expected: number) => {
        if (entries.get(key)?.revision !== expected) throw wrongLastSequence();
        const stored = put(key, value);
        if (!loseAnswer) return stored;
        loseAnswer = false;
        throw new Error(`update ${key}: stored, but no answer (connection cut)`);
      },
      get: async (key: string) => {
        const entry = entries.get(key);
        return entry && { operation: "PUT", revision: entry.revision, json: () => JSON.parse(entry.value) };
      },
    };
    const broker = {
      setups: { once: () => async () => kv },
      names: { leasesBucket: "leases" },
      writeKey: (_nc: unknown, _bucket: string, key: string, value: string, previous: number) =>
        previous === 0 ? kv.create(key, value) : kv.update(key, value, previous),
      run: async <A>(_name: string, op: (nc: unknown) => Promise<A>) => op({}),
    } as unknown as NatsJobBroker;
    const core = {
      clock,
      logger: silentLogger(),
      stopping: new AbortController().signal,
    } as unknown as NatsContext;
    const leases = new NatsJobLeases(core, broker, "A");

    expect(await leases.acquire("J", leaseMs, clock.now())).toBe(true);
    clock.advance(3_000);
    loseAnswer = true;
    await expect(leases.renew("J", leaseMs, clock.now())).rejects.toThrow(/no answer/);
    const lostWriteAt = storedAt.get("J") ?? Number.NaN;
    expect(lostWriteAt).toBe(3_000);
    clock.step(-5_000); // NTP sets the host's clock back
    clock.advance(3_000);
    // Meets the lost write (revision 2, not the 1 it knows) and takes it for its own.
    expect(await leases.renew("J", leaseMs, clock.now())).toBe(true);
    expect(storedAt.get("J")).toBe(lostWriteAt); // nothing new stored: the lost write is the lease
    // Cut off from here on: no heartbeat, no renewal. Others read J run out a lease after the
    // lost write was stored; its holder must have stopped holding by then.
    clock.advance(lostWriteAt + leaseMs - clock.monotonic());
    expect(leases.holds("J")).toBe(false);
  });
});
