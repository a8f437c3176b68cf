import { describe, expect, it } from "vitest";
import { nextTick } from "../../src/api/schedule-rule.ts";
import {
  type ClockBackend,
  clockBackends,
  committedTicks,
  type LastTickWritten,
  offsetBy,
} from "../harness/clock-backends.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const backends = clockBackends();

const period = 300;
const tenMinutes = 600_000;

/**
 * Waits for every tick real time gave in (start + a period, end] to be a job, but those `excused`
 * (a writer's to have fired); the early and skipped ones, and how many ticks real time gave.
 */
const judge = async (
  backend: ClockBackend,
  queue: string,
  start: number,
  end: number,
  excused: (tick: number) => boolean = () => false,
) => {
  const due: number[] = [];
  for (let t = nextTick({ everyMs: period }, start + period)!; t <= end; t += period) due.push(t);
  const expected = due.filter((t) => !excused(t));
  let ticks: number[] = [];
  let readAt = 0;
  for (const deadline = Date.now() + 5000; Date.now() < deadline; await delay(100)) {
    ticks = committedTicks(await backend.records(), queue);
    readAt = Date.now();
    if (expected.every((t) => ticks.includes(t))) break;
  }
  const early = ticks.filter((t) => t > readAt).map((t) => `+${t - readAt} ms`);
  const skipped = expected.filter((t) => !ticks.includes(t)).map((t) => new Date(t).toISOString());
  return { early, skipped, of: due.length };
};

describe.each(backends)("a runtime's clock ten minutes ahead, on $name", ({ name, make }) => {
  it.each(["a runtime with a correct clock", "the runtime ahead"])(
    "schedule stored by %s: no tick fires early, none is skipped",
    async (by) => {
      const backend = make();
      try {
        const queue = "skewed";
        const aheadLog = capturedLog();
        const a = await backend.runtime("right-a");
        await backend.runtime("right-b");
        const ahead = await backend.runtime("ahead", {
          clock: offsetBy(tenMinutes),
          logger: aheadLog.logger,
        });
        const upserter = by === "the runtime ahead" ? ahead : a;
        await upserter.schedules.upsert({ id: "skewed", everyMs: period, job: { queue, tasks: [1] } });
        // Once the upsert answered: the schedule's since (or the server's stamp of its write, for
        // a since stamped ahead) came before. Taken before the upsert, an upsert slower than the
        // period's slack (up to 0.8 s on a busy machine) stored a since after the first ticks
        // judged: not ticks of the schedule, and the judge said they were skipped.
        const start = Date.now();
        // Ten periods by the real clock, each runtime passing every second at most.
        await delay(3000);
        const end = Date.now();
        // The ticks real time gave after the upsert (a period's slack), each a job once its fire
        // is over (a second or two at most).
        const judged = await judge(backend, queue, start, end);
        expect(judged).toEqual({ early: [], skipped: [], of: judged.of });
        expect(judged.of).toBeGreaterThanOrEqual(8);
        // The runtime ahead says so, once.
        const told = aheadLog.lines.filter((l) => l.level === 50 && /clock is .*ahead/.test(l.msg));
        expect(told.length).toBe(1);
      } finally {
        await backend.stop();
      }
    },
    30_000,
  );

  it("a since and a lastTick written by clocks ahead, by a runtime with no scheduler and by hand: none is taken as it is", async () => {
    const backend = make();
    try {
      const queue = "skewed";
      const log = capturedLog();
      await backend.runtime("right-a", { logger: log.logger });
      // One log for both: whichever reads the lastTick written ahead first says so, and replaces it.
      await backend.runtime("right-b", { logger: log.logger });
      // A runtime that runs no scheduler (the CLI's) stores the schedule: on NATS its since ten minutes
      // on (its store has read no server time: no listing); in memory the server's clock is read at
      // each use, and its since is the server's time.
      const cli = await backend.runtime("cli-ahead", {
        clock: offsetBy(tenMinutes),
        jobs: { scheduler: false },
      });
      const start = Date.now();
      const upserted = await cli.schedules.upsert({
        id: "skewed",
        everyMs: period,
        job: { queue, tasks: [1] },
      });
      // The ticks are judged from the upsert's answer, as above.
      const answered = Date.now();
      if (name === "nats") expect(upserted.since).toBeGreaterThan(start + tenMinutes - 1000);
      else expect(Math.abs(upserted.since - start)).toBeLessThan(1000);
      await delay(1000);
      // Written once the schedulers record their ticks: those up to the lastTick it replaces are
      // theirs (on NATS they first read the schedule at their next pass, up to a second on).
      await waitUntil(async () => (await backend.schedule("skewed"))?.lastTick !== undefined, {
        timeoutMs: 5000,
        message: "a tick recorded",
      });
      // A writer ahead (an older runtime) records a tick ten minutes on.
      // Again on a lost compare-and-set (a scheduler recorded a tick between its read and write).
      let written: LastTickWritten | undefined;
      for (let attempt = 1; !written; attempt++)
        try {
          written = await backend.writeLastTick("skewed", Date.now() + tenMinutes);
        } catch (error) {
          if (attempt >= 5) throw error;
        }
      await delay(2000);
      const end = Date.now();
      // The schedulers take that lastTick as fired up to the server's stamp of its write: the
      // writer it stands for fired every tick up to its own time, ten minutes on. So the ticks
      // after the lastTick it replaced, up to that stamp, are the writer's: one that fell while
      // the write was on its way, not fired here before a scheduler read the write, is not fired
      // by it (a writer by hand fires none). Every other tick must be a job.
      const { replaced = answered, storedAt } = written;
      const judged = await judge(backend, queue, answered, end, (t) => t > replaced && t <= storedAt);
      expect(judged).toEqual({ early: [], skipped: [], of: judged.of });
      expect(judged.of).toBeGreaterThanOrEqual(8);
      // Each said at warn (once per runtime that read it), with how far ahead.
      const warned = log.lines.filter((l) => l.level === 40 && /ahead of the server's time/.test(l.msg));
      expect(new Set(warned.map((l) => ("since" in l ? "since" : "lastTick")))).toEqual(
        new Set(name === "nats" ? ["since", "lastTick"] : ["lastTick"]),
      );
      expect(warned.every((l) => (l.aheadMs as number) > 590_000)).toBe(true);
    } finally {
      await backend.stop();
    }
  }, 30_000);
});
