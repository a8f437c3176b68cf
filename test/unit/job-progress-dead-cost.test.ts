/**
 * What counting a job's dead answers costs (src/kernel/job-progress.ts,
 * `afterResults` as the job machine applies it, one results message at a
 * time): a job whose tasks all die (an upstream down, one delivery each) is
 * counted at about the cost of one whose tasks all succeed. Each dead answer
 * now names its letter, and the letters of the dead tasks are kept in a map
 * that every results message holding a death copies whole: the cost grew
 * with the square of the dead tasks (40,000 tasks in messages of 20: tens of
 * milliseconds succeeding, seconds dying; end to end on the memory broker,
 * 20,000 tasks dying took ~22 s, ~1.8 s before the letters; 40,000 ~130 s).
 */
import { describe, expect, it } from "vitest";
import { afterResults, type JobProgress, type ResultEntry } from "../../src/kernel/job-progress.ts";

const total = 40_000;
const perMessage = 20;

/** A job of `total` tasks with nothing answered, at time 0. */
const fresh = (): JobProgress => ({
  total,
  done: 0,
  failed: 0,
  dead: 0,
  answered: new Uint8Array(Math.ceil(total / 8)),
  deadBits: new Uint8Array(Math.ceil(total / 8)),
  lastProgressAt: 0,
  throughput: 0,
  throughputAt: null,
  rateTasks: 0,
  rateMs: 0,
  etaMs: null,
  now: 0,
});

/** Every task answered by `entry`, in results messages of `perMessage`. */
const messages = (entry: (i: number) => ResultEntry): ResultEntry[][] => {
  const all: ResultEntry[][] = [];
  for (let start = 0; start < total; start += perMessage)
    all.push(Array.from({ length: perMessage }, (_, k) => entry(start + k)));
  return all;
};

/** Counts the messages one at a time, as the job machine does; its time in ms and the counts. */
const count = (batches: ResultEntry[][]) => {
  let progress = fresh();
  const started = performance.now();
  let at = 1;
  for (const batch of batches) progress = { ...progress, ...afterResults(progress, batch, at++, false) };
  return { ms: performance.now() - started, done: progress.done, dead: progress.dead };
};

describe("counting a job whose tasks all die", () => {
  it("costs about what counting them all succeeded does", () => {
    const succeeded = messages((i) => ({ i, ok: true }));
    // Each dead answer names its letter, as a worker writes it (`"l":<seq>`).
    const died = messages((i) => ({ i, ok: false, e: "upstream down", dead: true, l: i + 1 }));
    // Warmed up on a tenth of each, then measured.
    count(succeeded.slice(0, succeeded.length / 10));
    count(died.slice(0, died.length / 10));
    const ok = count(succeeded);
    const dead = count(died);
    expect(ok).toMatchObject({ done: total, dead: 0 });
    expect(dead).toMatchObject({ done: 0, dead: total });
    // Before the letters, both took about as long (each message copies the job's bitmaps).
    expect(dead.ms, `dead ${dead.ms.toFixed(0)} ms, succeeded ${ok.ms.toFixed(0)} ms`).toBeLessThan(
      Math.max(10 * ok.ms, 250),
    );
  });
});
