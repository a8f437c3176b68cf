/**
 * A stalled job opened by `rt.jobs.get` on a runtime a minute ahead before
 * that runtime has any reading of the server's clock (its first takeover
 * pass, which lists the leases and reads one, comes half a lease after its
 * start), then taken over by that very actor when its supervisor stops.
 * `lastWriteOn` (f308b77) falls back to the writer's `updatedAt` with no
 * reading, and the actor keeps the `stalledSince` it started with: once it
 * holds the lease it is the supervisor, and by its clock the stall is a
 * minute old, so it fails the job "stalled too long" at its first tick, a
 * 20 s stalled timeout or not: the defect f308b77 fixed for a takeover pass,
 * still there for a watcher that takes over. Nothing reads the server's
 * clock before the actor starts (`readServerTime()` would).
 * Oracle: the stored record, still stalled two seconds after the takeover.
 * Fails on the current code: the record says failed ("stalled: no progress…").
 */
import { expect, it } from "vitest";
import { natsClockBackend, offsetBy, submitStalled, untilLeaseHeldBy } from "../harness/clock-backends.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { delay } from "../harness/wait.ts";

const served = useServerConnection();
const leaseMs = 6000;

it("a stalled job watched by a runtime ahead, then taken over by its actor, stays stalled until its timeout", async () => {
  const backend = natsClockBackend(served.server, served.nc);
  try {
    const queue = "q";
    const first = await backend.runtime("first", { jobs: { leaseMs, takeOver: false } });
    const job = await submitStalled(backend, first, queue);
    const ahead = await backend.runtime("ahead", { clock: offsetBy(60_000), jobs: { leaseMs } });
    // Opened at once: before the runtime's first takeover pass (leaseMs / 2 on) reads the server's clock.
    expect((await ahead.jobs.get(job.id))?.snapshot().status).toBe("stalled");
    await first.stop(); // its lease given back: the actor of `get` takes the job over
    await untilLeaseHeldBy(backend, job.id, "ahead");
    // It ticks every 125 ms: two seconds are sixteen ticks of the new supervisor.
    await delay(2000);
    const stored = (await backend.records()).find((r) => r.id === job.id);
    expect({ status: stored?.status, reason: stored?.reason }).toMatchObject({ status: "stalled" });
  } finally {
    await backend.stop();
  }
}, 60_000);
