/**
 * Two redrives of one job at once, [0] and [0, 1], three tasks dead, the
 * one that writes the record first ([0]) having stored its marker after the
 * other's: its marker took back nothing (task 0 was the other's), so it
 * lowers `dead` by 0, and the other by 2: 1 left, task 2's. The first
 * writer lowered by its whole set before, and the record said 0 dead with
 * task 2's letter there (a review). Oracle: the record's writes as the
 * broker got them.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { memorySide, natsSide, threeDead } from "../harness/redrive-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate } from "../harness/wait.ts";

describe.each([
  ["memory", memorySide],
  ["nats", natsSide],
] as const)(
  "redrives [0] and [0,1] at once, markers in the other order than the writes, on %s",
  (_k, makeSide) => {
    it("the record's dead count is the task left dead", { timeout: 40_000 }, async () => {
      const side = await makeSide();
      const together = gate();
      const bigMarked = gate();
      const smallWrote = gate();
      let holding = false;
      let arrived = 0;
      const markersOf = new Map<string, number>();
      const written: Array<{ markers: number | undefined; dead: number }> = [];
      const order = (inner: Broker) =>
        spiedBroker(inner, (name, _n, args, call) => {
          if (!holding) return call();
          if (name === "createConsumer") {
            if (++arrived === 2) together.open();
            return together.opened.then(call);
          }
          if (name === "publishResults") {
            const body = String(args[2]);
            const msgId = String(args[3]);
            const markers = body.split('"redrive":true').length - 1;
            const nonce = msgId.split(".").slice(2).join(".");
            markersOf.set(nonce, markers);
            if (markers === 1) return bigMarked.opened.then(call);
            return (call() as Promise<unknown>).then((v) => {
              bigMarked.open();
              return v;
            });
          }
          if (name === "updateRecord") {
            const next = args[0] as JobRecord;
            const markers = next.redrive === undefined ? undefined : markersOf.get(next.redrive);
            const go = () =>
              (call() as Promise<unknown>).then((v) => {
                written.push({ markers, dead: next.counts.dead });
                if (markers === 1) smallWrote.open();
                return v;
              });
            return markers === 2 ? smallWrote.opened.then(go) : go();
          }
          return call();
        }).broker;
      const a = await side.runtime("a");
      const b = await side.runtime("b", order, false);
      const queue = "overlap";
      const { job, worker, answer, mend } = await threeDead(a, queue);
      try {
        mend();
        holding = true;
        await Promise.all([b.jobs.redrive(job.id, [0]), b.jobs.redrive(job.id, [0, 1])]);
        holding = false;
        expect(written.map((w) => w.dead)).toEqual([3, 1]);
        expect(await side.stored(job.id)).toMatchObject({ status: "running", counts: { dead: 1 } });
      } finally {
        answer.open();
        together.open();
        bigMarked.open();
        smallWrote.open();
        await worker.stop();
        await b.stop();
        await a.stop();
        await side.dispose();
      }
    });
  },
);
