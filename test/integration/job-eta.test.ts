/**
 * ETA (issue #5): on a synthetic steady job (each task answered at a planned
 * time, fixed concurrency) the estimate given once 20 % is done is within 25 %
 * of the time the job really took from there. The plan is kept by timers, so
 * the rate is set by the handler, not by how busy the CPU is. Subscribers get
 * updates at a bounded rate and always the final state.
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { JobSnapshot } from "../../src/api/job-handle.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

describe("ETA and live updates", () => {
  let rt: Runtime;
  useNatsRuntime({ logger }, (started) => {
    rt = started.rt;
  });

  it("a steady job's ETA at 20 % done is within 25 % of the real remaining time", async () => {
    // 16 in flight × 200 ms each = 80 tasks/s: 6 s for 480 tasks. Each task is answered at a
    // time planned from the first one's start, one every 12.5 ms (task n at (n + 1) × 12.5 ms):
    // its handler waits until then, about 200 ms. So the rate is the plan's, not the CPU's: a
    // task started late (a neighbour busy on the same two cores: other test files run in
    // parallel) waits less, and the job catches up. With each handler waiting 200 ms from its
    // own start, such delays added up, and the 16 tasks of each wave ended together: the first
    // wave's answers reached the job in more than one results message, and the rate (measured
    // from the first answer) counted those after the first as answered within the window. The
    // estimate came out 9-20 % short (two or four copies of this file at once), a hiccup then
    // only a few points from the 25 % bound; answered as planned, 0-7 % (four copies beside two
    // busy cores).
    const total = 480;
    const taskMs = 200;
    const concurrency = 16;
    const spacingMs = taskMs / concurrency;
    let firstStart: number | undefined;
    const worker = rt.workers.start<number, number>({
      queue: "steady",
      concurrency,
      handler: async (task) => {
        firstStart ??= Date.now();
        const dueAt = firstStart + (task.index + 1) * spacingMs;
        await new Promise((r) => setTimeout(r, Math.max(0, dueAt - Date.now())));
        return task.payload;
      },
    });
    const job = await rt.jobs.submit({
      queue: "steady",
      tasks: Array.from({ length: total }, (_, n) => n),
    });
    const updates: Array<{ at: number; s: JobSnapshot }> = [];
    const unsubscribe = job.subscribe((s) => updates.push({ at: Date.now(), s }));
    const final = await job.done();
    unsubscribe();
    await worker.stop();
    expect(final).toMatchObject({ status: "succeeded", done: total, total, etaMs: 0 });

    // The estimate was made when the last counted answer arrived (lastProgressAt), so the
    // real remaining time is measured from then to the last answer of the job.
    const at20 = updates.find((u) => u.s.done >= total * 0.2 && u.s.status === "running");
    expect(at20, "an update once 20 % was done").toBeDefined();
    const { etaMs, lastProgressAt } = at20!.s;
    expect(etaMs).not.toBeNull();
    const actualMs = final.lastProgressAt - lastProgressAt;
    const error = Math.abs(etaMs! - actualMs) / actualMs;
    console.log(
      `ETA at ${at20!.s.done}/${total}: estimated ${etaMs} ms, actual ${actualMs} ms, ` +
        `error ${(error * 100).toFixed(1)} %`,
    );
    expect(error).toBeLessThanOrEqual(0.25);

    // At most 10 updates a second (the final one may come sooner), and the last one is the end.
    const last = updates.at(-1)!;
    expect(last.s).toMatchObject({ status: "succeeded", done: total });
    const spanMs = last.at - updates[0]!.at;
    expect(updates.length).toBeLessThanOrEqual(Math.floor(spanMs / 100) + 2);
    for (let n = 1; n < updates.length - 1; n++) {
      expect(updates[n]!.at - updates[n - 1]!.at).toBeGreaterThanOrEqual(90);
    }
    // Progress only moves forward.
    for (let n = 1; n < updates.length; n++) {
      expect(updates[n]!.s.done).toBeGreaterThanOrEqual(updates[n - 1]!.s.done);
    }
  });

  it("a subscriber that comes after the end still gets the final state", async () => {
    const worker = rt.workers.start<number, number>({ queue: "late", handler: (task) => task.payload });
    const job = await rt.jobs.submit({ queue: "late", tasks: [1, 2, 3] });
    const final = await job.done();
    await worker.stop();
    const seen: JobSnapshot[] = [];
    const unsubscribe = job.subscribe((s) => seen.push(s));
    await waitUntil(() => seen.length > 0, { timeoutMs: 2000, message: "the final state" });
    unsubscribe();
    expect(seen).toEqual([final]);
    // And a handle found later by id, too.
    const again = await rt.jobs.get(job.id);
    const seenAgain: JobSnapshot[] = [];
    again!.subscribe((s) => seenAgain.push(s));
    await waitUntil(() => seenAgain.length > 0, { timeoutMs: 2000, message: "the final state by id" });
    expect(seenAgain[0]).toMatchObject({ status: "succeeded", done: 3, total: 3 });
  });
});
