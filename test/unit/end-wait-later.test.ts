/**
 * The wait of an actor whose end is decided while it does not act as the
 * job's supervisor (`untilSupervising`, api/job-end-wait.ts), once it holds
 * the lease and its take of the record answers `later`: a 1-task lane job's
 * submit whose commit is not written yet, which this actor does not know
 * committed (`seen.laneSubmit` unset). The wait went on at once, reading the
 * record and taking the lease again in a loop for as long as that lasted. On
 * a memory broker; oracle: when the record was read.
 */
import { describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { endWait } from "../../src/api/job-end-wait.ts";
import type { RunState } from "../../src/api/job-run.ts";
import type { RecordSeen } from "../../src/effects/record-updates.ts";
import { realClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";
import { laneRecord } from "./fake-job-port.ts";

const leaseMs = 1000;
/** The wait's pause between two turns with this lease (`min(500, leaseMs / 4)`). */
const pauseMs = 250;
const reads = 10;

describe("the wait for a job's end, its take answering `later`", () => {
  it("pauses between its turns", async () => {
    const server = createMemoryServer({ prefix: "jetstate" });
    const inner = createMemoryBroker({ server, holder: "memory.w" });
    // When each read was made; a turn of the event loop each, so a loop of them does not starve
    // the timers.
    const read: number[] = [];
    const { broker } = spiedBroker(inner, (key, _n, _args, call) => {
      if (key !== "getRecord") return call();
      read.push(performance.now());
      return new Promise((resolve) => setImmediate(resolve)).then(call);
    });
    const aborted = new AbortController();
    try {
      const record = laneRecord({ commitDeadline: Date.now() + 60_000 });
      await broker.createRecord(record);
      // A watcher's: its take not written (no record names it), its lane submit not known committed.
      const seen: RecordSeen = { submit: record.submitId, holder: broker.leases.holder, fenced: false };
      const state = {
        run: {
          record,
          seen,
          log: silentLogger(),
          self: () => {
            throw new Error("no actor: nothing is sent to one here");
          },
          madeAgain: () => undefined,
        },
      } as unknown as RunState;
      const untilSupervising = endWait({ broker, clock: realClock, leaseMs, takeOver: true });
      const waiting = untilSupervising(
        state,
        { jobId: record.id, queue: record.queue, status: "succeeded", reason: null, counts: record.counts },
        aborted.signal,
        {},
      );
      await waitUntil(() => read.length >= reads, {
        timeoutMs: 10_000,
        message: () => `the record read ${reads} times (${read.length} so far)`,
      });
      // Two reads a turn (the wait's, the take's): four pauses at least between the first and
      // the tenth; a loop made them within a few milliseconds.
      const spanMs = (read[reads - 1] ?? 0) - (read[0] ?? 0);
      expect(spanMs, `the span of the first ${reads} reads (ms)`).toBeGreaterThan(3 * pauseMs);
      expect(broker.leases.holds(record.id), "the lease, taken").toBe(true);
      aborted.abort();
      expect(await waiting, "the wait, ended by the abort").toBe(true);
    } finally {
      aborted.abort();
      await inner.close();
      server.close();
    }
  });
});
