/**
 * A stalled job taken over by a runtime whose reading of the server's clock
 * had a slow round trip (3 s: a loaded server, a slow link, a busy event
 * loop). A reading's stamp may be later than the server's time at its
 * `seenAt` by up to its round trip (`ServerTime.roundTripMs`), which reads
 * this runtime's clock as less ahead by as much: the leases count it in
 * (`leaseAheadMs`, c9a75eb), so a lease is read as run out late, never
 * early. The stall does not (f308b77's `lastWriteOn` takes
 * `aheadOfServerRead`, the round trip left out): the stall is read as 3 s
 * older than it is, and the taker fails the job "stalled too long" 3 s
 * before its stalled timeout.
 * Here every clock is the real one (runtimes and the memory server), and the
 * taker's reading is one a scan would take: sent 3 s ago, stamped as its
 * answer came (the latest a stamp may fall), round trip 3 s.
 * Oracle: the failed record's `finishedAt` minus the stall's stored
 * `updatedAt`, both written on the one real clock.
 * Fails on the current code: the job fails ~3 s after its stall, its timeout is 6 s.
 */
import { randomUUID } from "node:crypto";
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import type { RawRecord } from "../harness/raw-job-records.ts";
import { waitUntil } from "../harness/wait.ts";

const leaseMs = 2000;
const stalledTimeoutMs = 6000;
const roundTripMs = 3000;

it("a stalled job taken over with a slow reading of the server's clock fails no earlier than its stalled timeout", async () => {
  const server = createMemoryServer();
  const runtimes: Runtime[] = [];
  const runtime = async (name: string, takeOver: boolean, slowReading = false) => {
    const broker = createMemoryBroker({ server, holder: `${name}.${randomUUID().slice(0, 8)}` });
    if (slowReading) {
      const seenAt = performance.now() - roundTripMs;
      const at = Date.now();
      broker.leases.serverTime = () => ({ at, seenAt, roundTripMs });
    }
    const rt = await createRuntime({
      name,
      logger: silentLogger(),
      jobs: { leaseMs, takeOver, cleanupIntervalMs: 0, reapIntervalMs: 0 },
      broker,
    });
    runtimes.push(rt);
    return rt;
  };
  const stored = (id: string) =>
    memoryServerState(server)
      .records.live()
      .map((e) => JSON.parse(e.value as string) as RawRecord & { updatedAt: number; finishedAt?: number })
      .find((r) => r.id === id);
  try {
    const first = await runtime("first", false);
    const job = await first.jobs.submit({
      queue: "q",
      tasks: [1],
      lane: false,
      stallAfterMs: 500,
      stalledTimeoutMs,
    });
    await waitUntil(async () => stored(job.id)?.status === "stalled", {
      timeoutMs: 10_000,
      message: "the job's record says stalled",
    });
    const stalledAt = stored(job.id)?.updatedAt ?? Number.NaN;
    await runtime("taker", true, true);
    await first.stop(); // its lease given back: the taker takes the job over
    await waitUntil(async () => stored(job.id)?.status === "failed", {
      timeoutMs: 20_000,
      message: "the job failed, stalled too long",
    });
    expect((stored(job.id)?.finishedAt ?? Number.NaN) - stalledAt).toBeGreaterThanOrEqual(stalledTimeoutMs);
  } finally {
    for (const rt of runtimes) await rt.stop();
    server.close();
  }
}, 60_000);
