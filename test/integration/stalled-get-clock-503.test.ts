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
 * Oracle: the handle is returned while the clock read is still refused, or
 * still unanswered (held until the test ends). The reader's operations get a
 * deadline of 10 min and 100 tries at least 0.5 s apart, so a `get` that waits on the
 * clock read, as any operation does, never returns within the test; a
 * bound of 20 s says "never" (the handle comes in about half a second).
 * Failed before the fix: 503s made get wait ~1.5 s (three creates, the
 * retries); a clock read not answered made it wait its 5 s. Passes with
 * jobs.ts's `readServerTime()` line removed (break-checked).
 */
import { type ConsumerAPI, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { expect, it } from "vitest";
import { natsClockBackend } from "../harness/clock-backends.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const served = useServerConnection();

/** How a create of a clock consumer is answered; `ended` opens when the test ends. */
const answers: Record<string, (ended: Promise<void>) => Promise<never>> = {
  "503 at once": () =>
    Promise.reject(
      new JetStreamApiError({
        code: 503,
        err_code: 10008,
        description: "JetStream system temporarily unavailable",
      }),
    ),
  // A server too slow to answer: no answer while the test runs (then nats.js's timeout error).
  "no answer": (ended) => ended.then(() => Promise.reject(new Error("timeout"))),
};

it.each(Object.keys(answers))(
  "get of a stalled job, the clock read answered %s: the handle at once",
  async (answer) => {
    const backend = natsClockBackend(served.server, served.nc);
    // Every JetStreamManager's consumers API (the runtimes' too) shares this prototype.
    const proto: ConsumerAPI = Object.getPrototypeOf((await jetstreamManager(served.nc)).consumers);
    const add = proto.add;
    const ended = gate();
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
          return answers[answer]!(ended.opened);
        }
        return add.call(this, stream, config, ...rest);
      } as typeof add;
      // An operation of the reader waits out refusals and silence for 10 minutes.
      const reader = await backend.runtime("reader", {
        jobs: { leaseMs: 6000 },
        connection: { operationTimeoutMs: 600_000, retry: { attempts: 100, initialDelayMs: 500 } },
      });
      const handle = await within(reader.jobs.get(job.id), 20_000);
      // A get that waits on the clock read: "never" (the read's refusals go on, or its answer never comes).
      expect(handle === "never" ? { handle, refused } : handle?.snapshot().status).toBe("stalled");
      expect(refused).toBeGreaterThan(0);
    } finally {
      ended.open();
      proto.add = add;
      await backend.stop();
    }
  },
  60_000,
);
