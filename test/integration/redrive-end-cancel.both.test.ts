/**
 * A cancel while a job's end is refused for a redrive: the supervisor (A)
 * decided the job failed, a redrive reopened the record before A's end was
 * written, so A's write was refused and A waits for the redrive's marker,
 * its feed behind. Then the job is cancelled from another runtime (B). That
 * cancel is how the job ended: A's wait must end on it and its handle
 * resolve, cancelled. Before, A stayed in its end's write until the marker
 * came, then reopened the job (running, its reason cleared) over a record
 * that was over, and its handles never resolved. The oracles: A's handle,
 * the record read from the server's store.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { flakyWorker, memorySide, natsSide, submitDying } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)("a cancel while an end is refused for a redrive, on %s", (_kind, makeSide) => {
  it("ends the job cancelled; the marker read later reopens nothing", { timeout: 40_000 }, async () => {
    const side = await makeSide();
    const release = gate();
    let held: Promise<unknown> | undefined;
    let holdFeed = false;
    const behind: Array<() => void> = [];
    const hold = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name === "followResults") {
          const onMessage = args[2] as (body: string, pending: number) => void;
          args[2] = (body: string, pending: number) => {
            if (holdFeed && body.includes('"redrive":true')) behind.push(() => onMessage(body, pending));
            else if (behind.length > 0) behind.push(() => onMessage(body, pending));
            else onMessage(body, pending);
          };
          return call();
        }
        if (name !== "updateRecord" || held || (args[0] as JobRecord).status !== "failed") return call();
        held = release.opened.then(call);
        return held;
      }).broker;
    const a = await side.runtime("a", hold);
    const b = await side.runtime("b");
    // Never mended: task 0 dies.
    const worker = flakyWorker(b, "endcancel").start();
    try {
      const job = await submitDying(a, "endcancel");
      await waitUntil(() => held !== undefined, { timeoutMs: 15_000, message: "A's end decided, held" });
      await waitUntil(async () => (await b.jobs.deadLetters(job.id)).length === 1, {
        timeoutMs: 15_000,
        message: "task 0's dead letter stored",
      });
      await worker.stop();
      // A's feed holds the redrive's marker; the redrive reopens the record A's end then meets.
      holdFeed = true;
      await b.jobs.redrive(job.id);
      expect(await side.stored(job.id)).toMatchObject({ status: "running" });
      release.open();
      await held?.catch(() => undefined); // its compare-and-set lost to the redrive's write
      // Refused: the record still says running, reopened by the redrive.
      expect(await side.stored(job.id)).toMatchObject({ status: "running" });
      const other = await b.jobs.get(job.id);
      await other?.cancel("not needed any more");
      expect(await side.stored(job.id)).toMatchObject({
        status: "failed",
        reason: "cancelled: not needed any more",
      });
      // A's handle resolves with the cancel, its feed still behind the marker.
      const end = await within(job.done(), 10_000);
      expect(end, "A's handle resolved before the marker was read").not.toBe("never");
      expect(end).toMatchObject({ status: "failed", reason: "cancelled: not needed any more" });
      holdFeed = false;
      for (const deliver of behind.splice(0)) deliver();
      expect(await side.stored(job.id)).toMatchObject({
        status: "failed",
        reason: "cancelled: not needed any more",
      });
    } finally {
      release.open();
      holdFeed = false;
      for (const deliver of behind.splice(0)) deliver();
      await b.stop();
      await a.stop();
      await side.dispose();
    }
  });
});
