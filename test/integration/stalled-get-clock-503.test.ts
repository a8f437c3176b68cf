/**
 * `rt.jobs.get` of a stalled job while JetStream answers the server clock's
 * read with 503 ("temporarily unavailable": a leader election, a results
 * stream without a leader). Since 6b81726 `get` of a stalled job first
 * reads the server's clock (`leases.readServerTime()`), and that read's
 * failure is now retried as any operation's, up to the operation deadline
 * (10 s by default). The record is read at once and the reading is only
 * wanted should the actor take the job over later (its first takeover pass
 * reads it anyway); before 6b81726 `get` returned the handle as soon as the
 * record was read. A dashboard or CLI `status` opening stalled jobs during
 * an election now waits seconds per runtime for each first get.
 * Oracle: the handle returned within 1 s (the record's read is a few ms).
 * Fails on the current code: 503s make get wait ~1.5 s (three creates,
 * the retries); a clock read not answered makes it wait its 5 s. Passes with
 * jobs.ts's `readServerTime()` line removed (break-checked).
 */
import { type ConsumerAPI, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { expect, it } from "vitest";
import { natsClockBackend } from "../harness/clock-backends.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { waitUntil } from "../harness/wait.ts";

const served = useServerConnection();

const answers = {
  "503 at once": () =>
    Promise.reject(
      new JetStreamApiError({
        code: 503,
        err_code: 10008,
        description: "JetStream system temporarily unavailable",
      }),
    ),
  // A server too slow to answer: the request times out (nats.js's TimeoutError says "timeout").
  "no answer in 5 s": () =>
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error("timeout")), 5000).unref()),
};

it.each(Object.keys(answers) as (keyof typeof answers)[])(
  "get of a stalled job, the clock read answered %s: the handle at once",
  async (answer) => {
    const backend = natsClockBackend(served.server, served.nc);
    // Every JetStreamManager's consumers API (the runtimes' too) shares this prototype.
    const proto: ConsumerAPI = Object.getPrototypeOf((await jetstreamManager(served.nc)).consumers);
    const add = proto.add;
    let refused = 0;
    try {
      const first = await backend.runtime("first", { jobs: { leaseMs: 6000, takeOver: false } });
      const job = await first.jobs.submit({ queue: "q", tasks: [1], lane: false, stallAfterMs: 500 });
      await waitUntil(
        async () => (await backend.records()).some((r) => r.id === job.id && r.status === "stalled"),
        { timeoutMs: 10_000, message: "the job's record says stalled" },
      );
      // From now on, every create of a clock consumer is answered 503, as in a leader election.
      proto.add = function (this: ConsumerAPI, stream, config, ...rest) {
        if (config?.name?.startsWith("clock_")) {
          refused++;
          return answers[answer]();
        }
        return add.call(this, stream, config, ...rest);
      } as typeof add;
      const reader = await backend.runtime("reader", { jobs: { leaseMs: 6000 } });
      const started = performance.now();
      const handle = await reader.jobs.get(job.id);
      const elapsedMs = Math.round(performance.now() - started);
      expect(handle?.snapshot().status).toBe("stalled");
      // Fails on the current code: elapsedMs is the clock read's retries (refused > 1), not a record's read.
      expect({ elapsedMs: elapsedMs < 1000 ? "under 1 s" : elapsedMs, refused }).toMatchObject({
        elapsedMs: "under 1 s",
      });
    } finally {
      proto.add = add;
      await backend.stop();
    }
  },
  60_000,
);
