/**
 * A `get()` in a process that did not submit the job: a cancel from
 * another process lands between the get's read of the record (running) and
 * its actor's start, which the record watch then never hands it (the watch
 * hands on writes made after it placed them, and this one's behind: here it
 * hands this job's nothing). The actor reads the record again once; when
 * that read failed (JetStream unanswered for a while), nothing read it again,
 * and the handle's `done()` waited for good: the job, over, is never written
 * again. The oracle: the handle of the process that cancelled, and the
 * reads the spy let through.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobHandle } from "../../src/api/job-handle.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import { memorySide, natsSide } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { within } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a get whose second read of the record fails, on %s", (_kind, makeSide) => {
  it("reads it again: the cancel landed meanwhile ends its handle", async () => {
    const side = await makeSide();
    let jobId = "";
    let reads = 0;
    let cancelled: Promise<unknown> = Promise.resolve();
    let cancelFromA: () => Promise<unknown> = async () => undefined;
    // B hears no write of the job through its watch; its first read of the record is followed by
    // A's cancel, its second fails as an outage would.
    const behind = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name === "watchRecordChanges") {
          const [onRecord, ...rest] = args as Parameters<Broker["watchRecordChanges"]>;
          return inner.watchRecordChanges(
            (record, revision) => (record.id === jobId ? undefined : onRecord(record, revision)),
            ...rest,
          );
        }
        if (name !== "getRecord" || args[0] !== jobId) return call();
        reads++;
        if (reads === 1)
          return (call() as Promise<unknown>).then(async (found) => {
            cancelled = cancelFromA();
            await cancelled;
            return found;
          });
        if (reads === 2)
          return Promise.reject(new TransientBrokerError({ message: "no answer", operation: "job.get" }));
        return call();
      }).broker;
    const a = await side.runtime("a");
    const b = await side.runtime("b", behind, false);
    try {
      const job = await a.jobs.submit({ queue: "read_again", tasks: [1, 2], lane: false });
      jobId = job.id;
      cancelFromA = () => job.cancel("from A");
      const seen = (await b.jobs.get(job.id)) as JobHandle<unknown>;
      await cancelled;
      expect(await within(seen.done(), 10_000)).toMatchObject({
        status: "failed",
        reason: "cancelled: from A",
      });
      expect(reads).toBeGreaterThanOrEqual(3);
    } finally {
      await Promise.allSettled([a.stop(), b.stop()]);
      await side.dispose();
    }
  }, 30_000);
});
