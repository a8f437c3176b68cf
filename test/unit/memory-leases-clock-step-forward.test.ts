/**
 * The memory broker's server runs in the runtimes' process, on their clock:
 * a host's clock set forward (NTP) moves the server's stamps and every
 * runtime's reading of them with it, so another runtime on the server reads
 * a lease as run out that much early, and may take its job over. The
 * holder must then not go on holding it: two supervisors of one job. The
 * oracle is the leases bucket as the server holds it, read raw.
 */
import { describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { ManualClock } from "../../src/kernel/clock.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";

const leaseMs = 10_000;

describe("memory leases, the process's clock set forward", () => {
  it("a holder does not hold a lease the server's bucket says another took", async () => {
    const clock = new ManualClock(0);
    const server = createMemoryServer({ clock });
    const a = createMemoryBroker({ server, holder: "A" }).leases;
    const b = createMemoryBroker({ server, holder: "B" }).leases;
    expect(await a.acquire("J", leaseMs, clock.now())).toBe(true);
    await a.heartbeat(leaseMs, clock.now());
    clock.advance(1_000);
    clock.step(60_000); // NTP sets the host's clock a minute on: the server's with it
    await b.acquire("J", leaseMs, clock.now());
    const raw = memoryServerState(server).leases.get("test.read", "J");
    const holder =
      raw?.value === undefined ? undefined : (JSON.parse(raw.value) as { holder: string }).holder;
    const supervisors = [a.holds("J") ? "A" : undefined, holder === "B" ? "B" : undefined].filter(Boolean);
    expect(supervisors, `the bucket says ${holder}; A holds: ${a.holds("J")}`).toHaveLength(1);
  });
});
