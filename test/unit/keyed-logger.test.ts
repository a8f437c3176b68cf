/**
 * A job logs through `keyedLogger`: its lines carry the job's keys as a
 * child's would, without a pino child kept for the job's life (~0.5 KiB of
 * heap a live job). The oracle for the lines is a real pino child of the same
 * parent, written to the same kind of capture.
 */
import { describe, expect, it, vi } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { keyedLogger } from "../../src/kernel/logger.ts";
import { capturedLog, type LogLine } from "../harness/log-lines.ts";

const keys = { actor: "job", jobId: "j-1", queue: "images" } as const;
const withoutTime = ({ time: _time, ...line }: LogLine) => line;

describe("keyedLogger", () => {
  it("writes the lines a child with the same keys writes, in every call form", () => {
    const mine = capturedLog("debug");
    const child = capturedLog("debug");
    const oracle = child.logger.child(keys);
    const log = keyedLogger(mine.logger, keys);
    const error = new Error("boom");
    for (const target of [log, oracle]) {
      target.info({ state: "running", from: "queuing" }, "job queuing → running");
      target.warn("lost the lease to %s", "rt-2");
      target.debug({ err: error }, "heartbeat not written");
      target.error(error);
      target.info({ jobId: "other" }, "a field named like a key wins");
    }
    expect(mine.lines.map(withoutTime)).toEqual(child.lines.map(withoutTime));
    expect(mine.lines).toHaveLength(5);
  });

  it("makes no child for a line, and writes none below the parent's level", () => {
    const { lines, logger } = capturedLog("info");
    const made = vi.spyOn(logger, "child");
    const log = keyedLogger(logger, keys);
    log.debug({ n: 1 }, "below the level");
    log.trace("below the level");
    log.info({ n: 2 }, "at the level");
    log.warn("above it");
    expect(made).not.toHaveBeenCalled();
    expect(lines.map((l) => [l.msg, l.jobId])).toEqual([
      ["at the level", "j-1"],
      ["above it", "j-1"],
    ]);
  });

  it("is a child for anything else: child(), level", () => {
    const { lines, logger } = capturedLog("info");
    const log = keyedLogger(logger, keys);
    expect(log.level).toBe("info");
    log.child({ workerId: "w-1" }).info("from a grandchild");
    expect(lines[0]).toMatchObject({ msg: "from a grandchild", jobId: "j-1", workerId: "w-1" });
  });
});

describe("a job's log", () => {
  it("carries the job's keys on every line, with no child logger made per job", async () => {
    const { lines, logger } = capturedLog("info");
    const made = vi.spyOn(logger, "child");
    const rt = await createRuntime({ broker: "memory", logger });
    try {
      const worker = rt.workers.start<number, number>({ queue: "q", handler: (task) => task.payload * 2 });
      const jobs = await Promise.all(
        [1, 2, 3].map((n) => rt.jobs.submit<number, number>({ queue: "q", tasks: [n] })),
      );
      for (const job of jobs) expect((await job.done()).status).toBe("succeeded");
      await worker.stop();
      for (const job of jobs) {
        const own = lines.filter((l) => l.jobId === job.id);
        expect(own.map((l) => l.msg)).toContain("job running → succeeded");
        expect(own.every((l) => l.actor === "job" && l.queue === "q")).toBe(true);
      }
      const perJob = made.mock.calls.filter(
        ([bindings]) => (bindings as { jobId?: string }).jobId !== undefined,
      );
      expect(perJob).toEqual([]);
    } finally {
      await rt.stop();
    }
  });
});
