/**
 * Attack on the schedules' clocks (review of 812ed9f), NATS: the server's
 * time is read as the creation stamp of a listing's consumer, paired with
 * `performance.now()` once the creation was *answered*. The pairing is the
 * server's time at the latest moment it could be: every millisecond the
 * answer took to come back (a loaded server, a slow link, this process's
 * event loop busy) reads as this runtime's clock being that much ahead. An
 * answer 1.5 s late makes a runtime whose clock is right "ahead by more than
 * a second": it says so at error, takes its time back by 1.5 s, and fires
 * every tick 1.5 s late (each recorded tick changes the bucket, so the next
 * listing reads the same late answer again). Paired with the moment the
 * request was sent, the reading could only make the runtime look behind.
 *
 * Here only the answers to the schedules' consumer creations come 1.5 s late
 * (a proxy holds the bytes from the server from each such answer on);
 * everything else is as fast as ever. Oracle: the runtime's clock is the
 * real one; the error it says, and the schedule's record read raw: its
 * `updatedAt` (written with the scheduler's time when it recorded a tick)
 * against the server's stamp of that write. (Its ticks fire ~1.5 s later
 * than the slow listing alone makes them: +2–3 s in all, seen, not asserted.)
 */
import { Kvm } from "@nats-io/kv";
import { expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { rawJobRecords } from "../harness/raw-job-records.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { holdingProxy } from "../harness/tcp-proxy.ts";
import { waitUntil } from "../harness/wait.ts";

const slowMs = 1500;

const served = useServerConnection();

it("a runtime whose clock is right, its listing's consumer answered 1.5 s late: not taken for ahead, its stamps not taken back", async () => {
  // The bytes from the server are held `slowMs` from each answer to a schedules' consumer creation on.
  const proxy = await holdingProxy(served.server.url, "server", (text) =>
    text.includes("consumer_create_response") && text.includes("_schedules") ? slowMs : 0,
  );
  const log = capturedLog();
  const rt = await createRuntime({
    servers: proxy.url,
    prefix: "slowanswer",
    name: "right",
    logger: log.logger,
    jobs: { cleanupIntervalMs: 0, reapIntervalMs: 0 },
  });
  try {
    const queue = "slow";
    await rt.schedules.upsert({ id: "slow", everyMs: 1000, job: { queue, tasks: [1] } });
    // Four ticks fired: as many listings, each answered late, each a reading of the clock.
    const records = async () =>
      (await rawJobRecords(served.nc, "slowanswer_jobs")).filter((r) => r.queue === queue);
    await waitUntil(async () => (await records()).length > 3, {
      timeoutMs: 20_000,
      message: "the schedule's fourth tick to fire",
    });
    // The schedule's record as stored: its updatedAt (this runtime's time when it recorded its last
    // tick) against the server's stamp of that write.
    const entry = (await (await new Kvm(served.nc).open("slowanswer_schedules")).get("slow"))!;
    const stampedBehindMs = entry.created.getTime() - entry.json<{ updatedAt: number }>().updatedAt;
    const saidAhead = log.lines.filter((l) => l.level === 50 && /clock is .*ahead/.test(l.msg));
    expect({
      saidAhead: saidAhead.map((l) => l.aheadMs),
      updatedAtBehindItsWrite: stampedBehindMs > 1000 ? `${stampedBehindMs} ms` : "no",
    }).toEqual({ saidAhead: [], updatedAtBehindItsWrite: "no" });
  } finally {
    await rt.stop();
    await proxy.close();
  }
}, 30_000);
