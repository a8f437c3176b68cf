/**
 * What counting a job's dead answers copies (src/kernel/job-progress.ts,
 * `afterResults` as the job machine applies it, one results message at a
 * time): each dead answer names its letter, and the letters of the dead
 * tasks are kept by the job. Kept in one map that every results message
 * holding a death copied whole, the cost grew with the square of the dead
 * tasks (found by a review: 40,000 tasks in messages of 20, tens of
 * milliseconds succeeding, seconds dying; end to end on the memory broker,
 * 20,000 tasks dying took ~22 s, ~1.8 s before the letters; 40,000 ~130 s).
 * They are kept in chunks now, a message copying those it changes. Counted,
 * not timed: what a message copies.
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

/**
 * Counts the messages one at a time, as the job machine does: the counts, and the letters each
 * message copied (those in chunks it made anew rather than shared with the counts before it).
 */
const count = (batches: ResultEntry[][]) => {
  let progress = fresh();
  let copied = 0;
  let at = 1;
  for (const batch of batches) {
    const before = progress.deadLetters ?? [];
    progress = { ...progress, ...afterResults(progress, batch, at++, false) };
    for (const chunk of progress.deadLetters ?? [])
      if (chunk && !before.includes(chunk)) copied += chunk.size;
  }
  return { done: progress.done, dead: progress.dead, copiedPerMessage: copied / batches.length };
};

describe("counting a job whose tasks all die", () => {
  it("copies a bounded number of letters per results message, not every dead task's", () => {
    expect(count(messages((i) => ({ i, ok: true })))).toMatchObject({
      done: total,
      dead: 0,
      copiedPerMessage: 0,
    });
    // Each dead answer names its letter, as a worker writes it (`"l":<seq>`).
    const dead = count(messages((i) => ({ i, ok: false, e: "upstream down", dead: true, l: i + 1 })));
    expect(dead).toMatchObject({ done: 0, dead: total });
    // A chunk of letters (1,024 tasks) at most, and the message's own; the whole map copied at
    // each message was ~20,000 a message here (the square of the deaths, over the run).
    expect(dead.copiedPerMessage).toBeLessThanOrEqual(1024 + perMessage);
  });
});
