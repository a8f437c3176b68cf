import type { LoopGroup } from "../effects/loop-group.ts";
import { type Clock, everyUntil, monotonicNow } from "../kernel/clock.ts";

/** A job's periodic step (a lease renewal, a lost-task check): undefined when it has nothing to do. */
export interface Chore {
  /** Names its runs among the runtime's loops (`rt.stop()` lists the ones still running). */
  readonly name: string;
  readonly everyMs: number;
  readonly run: () => Promise<void> | undefined;
}

interface Scheduled {
  readonly chore: Chore;
  /** On the monotonic clock (`monotonicNow`). */
  dueAt: number;
  running: boolean;
}

/**
 * The runtime's one timer for the periodic steps of all its jobs: two loops
 * per job (a timer, a fiber and their closures each, ~10 KB of heap a job)
 * became one entry in a set. Each tick starts the steps that are due, never
 * a second run of a step still in flight (two lease renewals in flight with
 * the same revision, the second would lose its compare-and-set to the first
 * and this runtime would think it lost the lease). A step runs as one of the
 * runtime's loops, so `rt.stop()` waits for it; a slow one delays only its
 * own next run. Time is the runtime's monotonic clock (`monotonicNow`):
 * tests drive leases and stalls with a manual one, and a wall clock set back
 * (NTP) does not hold the renewals back (due by `now()`, a minute back
 * stopped them for a minute, and the runtime's leases ran out).
 */
export class JobChores {
  readonly #clock: Clock;
  readonly #loops: Pick<LoopGroup, "run">;
  readonly #tickMs: number;
  readonly #scheduled = new Set<Scheduled>();
  #ticking = false;

  /** `tickMs`: how late a step may run; half the shortest period it will be given. */
  constructor(clock: Clock, loops: Pick<LoopGroup, "run">, tickMs: number) {
    this.#clock = clock;
    this.#loops = loops;
    this.#tickMs = Math.max(10, tickMs);
  }

  /** Runs `chore` every `everyMs` from now on; the function returned stops it (a run in flight ends on its own). */
  add(chore: Chore): () => void {
    const scheduled: Scheduled = { chore, dueAt: monotonicNow(this.#clock) + chore.everyMs, running: false };
    this.#scheduled.add(scheduled);
    this.#startTicking();
    return () => {
      this.#scheduled.delete(scheduled);
    };
  }

  #startTicking(): void {
    if (this.#ticking) return;
    this.#ticking = true;
    // Ends with the runtime (its loops' signal), or once no job has a step left; the next `add` starts it again.
    this.#loops.run("job-chores", (signal) => {
      const idle = new AbortController();
      return everyUntil(
        this.#clock,
        this.#tickMs,
        () => {
          if (this.#scheduled.size === 0) idle.abort();
          else this.#tick();
          return undefined;
        },
        AbortSignal.any([signal, idle.signal]),
      ).finally(() => {
        this.#ticking = false;
        if (this.#scheduled.size > 0 && !signal.aborted) this.#startTicking();
      });
    });
  }

  #tick(): void {
    const now = monotonicNow(this.#clock);
    for (const scheduled of this.#scheduled) {
      if (scheduled.running || now < scheduled.dueAt) continue;
      scheduled.dueAt = now + scheduled.chore.everyMs;
      let run: Promise<void> | undefined;
      try {
        run = scheduled.chore.run();
      } catch (error) {
        run = Promise.reject(error); // a bug: logged by the loop group, and the next tick runs on
      }
      if (!run) continue;
      scheduled.running = true;
      this.#loops.run(scheduled.chore.name, () =>
        run.finally(() => {
          scheduled.running = false;
        }),
      );
    }
  }
}
