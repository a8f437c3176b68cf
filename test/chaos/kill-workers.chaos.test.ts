/**
 * (f) A worker process is SIGKILLed every second, and a new one started in
 * its place, until the job ends: tasks a dead worker held come back after
 * the job's ackWait (5 s) and are answered by another. Only workers that are
 * working are killed (a process still starting holds no task).
 */
import { delay } from "../harness/wait.ts";
import { describeChaos } from "./chaos-run.ts";

const EVERY_MS = 1_000;
/** Kills stop after this many even if the job goes on (it then ends on the workers left). */
const MAX_KILLS = 60;

describeChaos({
  id: "f-kill-workers",
  title: "(f) kill a worker process every second (workers restarted)",
  inject: async (ctx) => {
    let kills = 0;
    while (!ctx.jobEnded() && kills < MAX_KILLS) {
      const working = ctx.workers.alive.filter((w) => w.working);
      const victim = working[Math.floor(Math.random() * working.length)];
      if (victim !== undefined) {
        kills++;
        await ctx.fault(`kill worker ${victim.seq}`, () => ctx.workers.kill(victim));
        ctx.workers.start();
      }
      await delay(EVERY_MS);
    }
    ctx.note("workersKilled", kills);
    ctx.note("workersWorkingAtEnd", ctx.workers.alive.filter((w) => w.working).length);
  },
});
