/**
 * A job's progress arithmetic (src/kernel/job-progress.ts), checked against
 * numbers worked out by hand: which answers count, the decayed rate (time
 * constant 10 s: a sample dt ms old weighs e^(−dt/10000)) and the ETA. The
 * expected values are written out here, never computed with the code under
 * test; test/unit/job-machine.test.ts checks the same rules on a live actor.
 */
import { describe, expect, it } from "vitest";
import {
  afterResults,
  countAnswers,
  type DeadLetterSeqs,
  estimateEtaMs,
  FirstAnswers,
  type JobProgress,
  noDeadBits,
  type ResultEntry,
  remaining,
  sampleRate,
} from "../../src/kernel/job-progress.ts";
import { decodeResults, encodeBatch, encodeDeathAgain } from "../../src/kernel/result-wire.ts";

/** A job of `total` tasks with nothing answered, at time 0. */
const fresh = (total: number, overrides: Partial<JobProgress> = {}): JobProgress => ({
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
  ...overrides,
});

const ok = (...indexes: number[]): ResultEntry[] => indexes.map((i) => ({ i, ok: true }));

/** A job's dead tasks' letters as [index, letter] pairs, whatever chunks hold them. */
const lettersOf = (seqs: DeadLetterSeqs | undefined): [number, number][] =>
  (seqs ?? []).flatMap((chunk) => [...(chunk ?? [])]);

describe("FirstAnswers", () => {
  it("a task first answered by a success or a failure is alive; one that died first is not, whatever came after", () => {
    const first = new FirstAnswers(12);
    // 0: success, then the dead answer of its lost ack. 1: failure, then dead. 2: dead, then
    // redriven and answered. 3: dead. 4: a marker first (no answer yet), then dead. 5: nothing.
    // 9: success in a later message. 12 and -1: out of the job.
    first.add([
      { i: 0, ok: true },
      { i: 1, ok: false },
      { i: 2, ok: false, dead: true },
    ]);
    first.add([
      { i: 0, ok: false, dead: true },
      { i: 1, ok: false, dead: true },
      { i: 2, redrive: true, id: "r1" },
      { i: 2, ok: true },
      { i: 3, ok: false, dead: true },
      { i: 4, redrive: true, id: "r1" },
      { i: 4, ok: false, dead: true },
      { i: 12, ok: true },
      { i: -1, ok: true },
    ]);
    first.add([{ i: 9, ok: true }]);
    const alive = Array.from({ length: 13 }, (_, i) => i).filter((i) => first.alive(i));
    expect(alive).toEqual([0, 1, 9]);
    // 4's marker is not an answer; its dead one is. Nothing came for 5.
    expect(first.seenAll([0, 1, 2, 3, 4, 9])).toBe(true);
    expect(first.seenAll([3, 5])).toBe(false);
  });
});

describe("remaining", () => {
  it("is the tasks not answered: total minus done, failed and dead", () => {
    expect(remaining({ total: 10, done: 3, failed: 2, dead: 1 })).toBe(4);
    expect(remaining({ total: 5, done: 5, failed: 0, dead: 0 })).toBe(0);
  });
});

describe("countAnswers", () => {
  it("counts each new index once by kind, and ignores duplicates and indexes outside 0..total-1", () => {
    const before = fresh(10);
    const counted = countAnswers(before, [
      { i: 0, ok: true },
      { i: 3, ok: false },
      { i: 9, ok: false, dead: true },
      { i: 0, ok: true },
      { i: 3, ok: true },
      { i: 10, ok: true },
      { i: -1, ok: true },
      { i: 1.5, ok: true },
    ]);
    expect(counted).toMatchObject({ done: 1, failed: 1, dead: 1, added: 3, changed: true });
    // Bits 0 and 3 of byte 0, bit 1 of byte 1 (task 9).
    expect([...counted.answered]).toEqual([0b0000_1001, 0b0000_0010]);
    expect([...counted.deadBits]).toEqual([0, 0b0000_0010]);
    // Copies: the bitmaps handed in are unchanged.
    expect([...before.answered]).toEqual([0, 0]);
    expect([...before.deadBits]).toEqual([0, 0]);
  });

  it("a redrive takes back a dead answer only, so the task can be answered again", () => {
    const died = fresh(10, {
      answered: Uint8Array.from([0b0000_0001, 0b0000_0010]),
      deadBits: Uint8Array.from([0, 0b0000_0010]),
    });
    const redriven = countAnswers(died, [{ i: 9, redrive: true }]);
    expect(redriven).toMatchObject({ done: 0, failed: 0, dead: -1, added: 0, changed: true });
    expect([...redriven.answered]).toEqual([0b0000_0001, 0]);
    expect([...redriven.deadBits]).toEqual([0, 0]);

    // Task 0 answered ok: not dead, so its redrive is ignored.
    const ignored = countAnswers(died, [{ i: 0, redrive: true }]);
    expect(ignored).toMatchObject({ done: 0, failed: 0, dead: 0, added: 0, changed: false });

    // Redriven, then answered again in the same batch.
    const again = countAnswers(died, [{ i: 9, redrive: true }, ...ok(9)]);
    expect(again).toMatchObject({ done: 1, dead: -1, added: 1, changed: true });
    expect([...again.answered]).toEqual([0b0000_0001, 0b0000_0010]);
    expect([...again.deadBits]).toEqual([0, 0]);
  });

  it("a marker takes back only a dead answer whose letter it sends back; either naming none, any", () => {
    const total = 4;
    // Tasks 0-3 die, naming letters 10-13 (task 3: an earlier version's answer, naming none).
    const died = countAnswers(fresh(total), [
      { i: 0, ok: false, dead: true, l: 10 },
      { i: 1, ok: false, dead: true, l: 11 },
      { i: 2, ok: false, dead: true, l: 12 },
      { i: 3, ok: false, dead: true },
    ]);
    const progress = { total, ...died };
    expect(lettersOf(died.deadLetters)).toEqual([
      [0, 10],
      [1, 11],
      [2, 12],
    ]);
    const marked = countAnswers(progress, [
      { i: 0, redrive: true, id: "b-2", l: [9] }, // a letter before task 0's death: not its
      { i: 1, redrive: true, id: "b-2", l: [9, 11] },
      { i: 2, redrive: true, id: "b-2" }, // an earlier version's marker
      { i: 3, redrive: true, id: "b-2", l: [9] }, // an earlier version's answer
    ]);
    expect(marked).toMatchObject({ dead: -3, added: 0, changed: true });
    expect([...marked.deadBits]).toEqual([0b0001]);
    expect(lettersOf(marked.deadLetters)).toEqual([[0, 10]]);
    // The input untouched; the death taken back answered again, its new letter named.
    expect(lettersOf(died.deadLetters)).toHaveLength(3);
    const again = countAnswers({ total, ...marked }, [
      { i: 1, ok: false, dead: true, l: 21 },
      { i: 0, redrive: true, id: "c-2", l: [10] },
    ]);
    expect(again).toMatchObject({ dead: 0, added: 1 });
    expect([...again.deadBits]).toEqual([0b0010]);
    expect(lettersOf(again.deadLetters)).toEqual([[1, 21]]);
  });

  it("a marker stored before the dead answer naming a letter it sends back takes that answer back as it lands: the redrive's copy is counted", () => {
    // A worker stores a task's letter, then its dead answer; a redrive read the letter in
    // between, and its marker landed first. Each line a results message, in the stream's order.
    const stream: ResultEntry[][] = [
      [{ i: 1, ok: true }],
      [
        { i: 0, redrive: true, id: "r-1", l: [10] },
        { i: 2, redrive: true, id: "r-1", l: [12] },
        { i: 3, redrive: true, id: "r-1", l: [13] },
        { i: 4, redrive: true, id: "r-1", l: [14] },
        { i: 5, redrive: true, id: "r-1" }, // an earlier version's marker: names no letter
      ],
      // Task 0's death, of the letter the marker sent back: the redrive's copy answers for it.
      [{ i: 0, ok: false, dead: true, l: 10 }],
      // Task 2's death names another letter (one the redrive did not read): counted.
      [{ i: 2, ok: false, dead: true, l: 22 }],
      // An earlier version's dead answer names no letter: counted, as then.
      [{ i: 3, ok: false, dead: true }],
      // Task 4's death is taken back too; its copy dies again, a letter of its own: counted.
      [{ i: 4, ok: false, dead: true, l: 14 }],
      // After an earlier version's marker (naming no letter), a death counts, as then.
      [{ i: 5, ok: false, dead: true, l: 15 }],
      [{ i: 0, ok: true }],
      [{ i: 4, ok: false, dead: true, l: 24 }],
    ];
    let progress = fresh(6);
    let at = 1;
    for (const message of stream) progress = { ...progress, ...afterResults(progress, message, at++, false) };
    expect(progress).toMatchObject({ done: 2, failed: 0, dead: 4 });
    expect(lettersOf(progress.deadLetters).sort((a, b) => a[0] - b[0])).toEqual([
      [2, 22],
      [4, 24],
      [5, 15],
    ]);
    // A supervisor taking the job over counts the same stream in one read: the same counts.
    const replayed = afterResults(fresh(6), stream.flat(), 1, true);
    expect(replayed).toMatchObject({ done: 2, failed: 0, dead: 4 });
    // Task 0's death counted now would be a duplicate: its copy's answer stands.
    const late = countAnswers({ ...progress }, [{ i: 0, ok: false, dead: true, l: 10 }]);
    expect(late).toMatchObject({ dead: 0, added: 0, changed: false });
  });

  it("a refused redrive's death stored again after another redrive's marker of the same letter counts: the task is answered (as before lettersAhead)", () => {
    // Task 0 died (letter 10). Redrives a = [0] and b = [0, 1] both read letter 10 (different
    // sets, so different markers). a's marker lands first and takes the death back; b's lands
    // next and finds task 0 with no answer counted (a letter ahead, `takenAhead`). The job is
    // cancelled meanwhile: a's record write is refused, and a stores again the death its marker
    // took back, naming its letter (job-redrive.ts, `takeBack`). No copy of task 0 runs: that
    // death is task 0's last answer. Before lettersAhead it was counted (done + failed + dead
    // == total); now it is taken back as it lands, task 0 counted by nothing, for good.
    const stream: ResultEntry[][] = [
      [{ i: 1, ok: true }],
      [{ i: 0, ok: false, dead: true, l: 10 }],
      [{ i: 0, redrive: true, id: "a", l: [10] }],
      [{ i: 0, redrive: true, id: "b", l: [10] }],
      // a's death stored again after its refusal, as `takeBack` (job-redrive.ts) writes it.
      decodeResults(encodeBatch([encodeDeathAgain(0, "boom", 10)])),
    ];
    let progress = fresh(2);
    let at = 1;
    for (const message of stream) progress = { ...progress, ...afterResults(progress, message, at++, false) };
    expect({ done: progress.done, failed: progress.failed, dead: progress.dead }).toEqual({
      done: 1,
      failed: 0,
      dead: 1,
    });
    expect(remaining(progress)).toBe(0);
    expect(lettersOf(progress.deadLetters)).toEqual([[0, 10]]);
    // A supervisor taking the job over, counting the same stream in one read: the same.
    expect(afterResults(fresh(2), stream.flat(), 1, true)).toMatchObject({ done: 1, failed: 0, dead: 1 });
  });

  it("a death stored after a marker naming its letter is taken back as it lands even when that marker took back another death of the task (two letters of one death)", () => {
    // One death, two letters: the worker stored letter 10 and hung past its delivery's lease
    // before storing its dead answer; the server's advisory had the task dead-lettered (letter
    // 11) and stored its own dead answer first. A redrive read both letters: its marker names
    // 10 and 11, lands after the advisory's death (takes it back) and before the worker's. The
    // worker's death, stored after a marker of its letter, must be taken back as it lands
    // (architecture.md, "A death stored after a marker of its letter is taken back as it
    // lands"): the redrive's copy answers for task 0, and the redrive removes both letters.
    const stream: ResultEntry[][] = [
      [{ i: 1, ok: true }],
      [{ i: 0, ok: false, dead: true, l: 11 }],
      [{ i: 0, redrive: true, id: "r", l: [10, 11] }],
      [{ i: 0, ok: false, dead: true, l: 10 }],
      // The redrive's copy.
      [{ i: 0, ok: true }],
    ];
    let progress = fresh(2);
    let at = 1;
    for (const message of stream) progress = { ...progress, ...afterResults(progress, message, at++, false) };
    expect({ done: progress.done, failed: progress.failed, dead: progress.dead }).toEqual({
      done: 2,
      failed: 0,
      dead: 0,
    });
    expect(lettersOf(progress.deadLetters)).toEqual([]);
    expect(afterResults(fresh(2), stream.flat(), 1, true)).toMatchObject({ done: 2, failed: 0, dead: 0 });
  });

  it("letters far apart are kept apart: a batch copies the chunks it changes, the others shared, the input untouched", () => {
    const total = 5000;
    const died = countAnswers(fresh(total), [
      { i: 0, ok: false, dead: true, l: 1 },
      { i: 1023, ok: false, dead: true, l: 2 },
      { i: 1024, ok: false, dead: true, l: 3 },
      { i: 4999, ok: false, dead: true, l: 4 },
    ]);
    const taken = countAnswers({ total, ...died }, [{ i: 1024, redrive: true, id: "r-2", l: [3] }]);
    expect(taken).toMatchObject({ dead: -1 });
    expect(lettersOf(taken.deadLetters)).toEqual([
      [0, 1],
      [1023, 2],
      [4999, 4],
    ]);
    expect(lettersOf(died.deadLetters)).toHaveLength(4);
    // The chunks the batch did not change are the same objects.
    expect(taken.deadLetters?.[0]).toBe(died.deadLetters?.[0]);
    expect(taken.deadLetters?.[4]).toBe(died.deadLetters?.[4]);
    expect(taken.deadLetters?.[1]).not.toBe(died.deadLetters?.[1]);
    // A marker of a letter the task's death does not name, in another chunk, takes nothing back.
    expect(countAnswers({ total, ...taken }, [{ i: 4999, redrive: true, id: "s-2", l: [2] }])).toMatchObject({
      dead: 0,
      changed: false,
    });
  });

  it("a job none of whose tasks died shares one empty dead bitmap: its own is made at its first death, the shared one never written", () => {
    const a = fresh(16, { deadBits: noDeadBits });
    const b = fresh(3, { deadBits: noDeadBits });
    const alive = countAnswers(a, [...ok(0), { i: 1, ok: false }]);
    expect(alive.deadBits).toBe(noDeadBits);
    const died = countAnswers(a, [{ i: 9, ok: false, dead: true }]);
    expect([...died.deadBits]).toEqual([0, 0b0000_0010]);
    expect([...countAnswers(b, [{ i: 2, ok: false, dead: true }]).deadBits]).toEqual([0b0000_0100]);
    // Redriven from its own: the bit cleared in a copy; a redrive of a task that never died changes nothing.
    const redriven = countAnswers({ ...a, answered: died.answered, deadBits: died.deadBits }, [
      { i: 9, redrive: true },
    ]);
    expect([...redriven.deadBits]).toEqual([0, 0]);
    expect([...died.deadBits]).toEqual([0, 0b0000_0010]);
    expect(countAnswers(a, [{ i: 9, redrive: true }])).toMatchObject({ changed: false, dead: 0 });
  });

  it("only duplicates: nothing changed", () => {
    const seen = fresh(3, { answered: Uint8Array.from([0b0000_0111]) });
    expect(countAnswers(seen, ok(0, 1, 2))).toMatchObject({ done: 0, added: 0, changed: false });
  });
});

describe("sampleRate", () => {
  it("the first sample is the rate itself: 2 tasks in 1000 ms are 2 per second", () => {
    expect(sampleRate({ rateTasks: 0, rateMs: 0 }, 2, 1000)).toEqual({
      rateTasks: 2,
      rateMs: 1000,
      throughput: 2,
    });
  });

  it("older sums decay by e^(−dt/10 s) before the new sample is added", () => {
    // dt 2000: e^(−0.2) = 0.8187307531; tasks 2·d + 1 = 2.6374615062, ms 1000·d + 2000 = 2818.7307531.
    const later = sampleRate({ rateTasks: 2, rateMs: 1000 }, 1, 2000);
    expect(later.rateTasks).toBeCloseTo(2.6374615062, 9);
    expect(later.rateMs).toBeCloseTo(2818.7307531, 6);
    expect(later.throughput).toBeCloseTo(0.9356911806, 9);

    // dt one time constant: e^(−1) = 0.3678794412; tasks 10/e + 5, ms 5000/e + 10000.
    const tau = sampleRate({ rateTasks: 10, rateMs: 5000 }, 5, 10_000);
    expect(tau.rateTasks).toBeCloseTo(8.6787944117, 9);
    expect(tau.rateMs).toBeCloseTo(11839.3972059, 6);
    expect(tau.throughput).toBeCloseTo(0.7330436052, 9);
  });
});

describe("estimateEtaMs", () => {
  it("is the tasks left at the rate, in whole milliseconds", () => {
    expect(estimateEtaMs(7, 2)).toBe(3500);
    // 6 / 0.9356911806 s = 6412.372 ms.
    expect(estimateEtaMs(6, 0.9356911806)).toBe(6412);
    // 1/3 s and 2/3 s, rounded to the nearest millisecond.
    expect(estimateEtaMs(1, 3)).toBe(333);
    expect(estimateEtaMs(2, 3)).toBe(667);
  });

  it("is 0 with nothing left, with or without a rate, and unknown without a rate", () => {
    expect(estimateEtaMs(0, 0)).toBe(0);
    expect(estimateEtaMs(0, 5)).toBe(0);
    expect(estimateEtaMs(7, 0)).toBeNull();
  });
});

describe("afterResults", () => {
  it("the first answer counts and starts the rate's clock, without a rate or an ETA", () => {
    const next = afterResults(fresh(10), ok(0), 2000, false);
    expect(next).toMatchObject({
      done: 1,
      failed: 0,
      dead: 0,
      now: 2000,
      lastProgressAt: 2000,
      throughputAt: 2000,
    });
    expect(next).not.toHaveProperty("throughput");
    expect(next).not.toHaveProperty("etaMs");
  });

  it("the first answer that is also the last sets the ETA to 0", () => {
    expect(afterResults(fresh(1), ok(0), 50, false)).toMatchObject({ done: 1, etaMs: 0 });
  });

  it("a later batch is a rate sample: 2 answers 1000 ms after the first, 7 left → 3.5 s", () => {
    const started = fresh(10, { done: 1, answered: Uint8Array.from([1, 0]), throughputAt: 2000, now: 2000 });
    expect(afterResults(started, ok(1, 2), 3000, false)).toMatchObject({
      done: 3,
      rateTasks: 2,
      rateMs: 1000,
      throughput: 2,
      etaMs: 3500,
      throughputAt: 3000,
      lastProgressAt: 3000,
      now: 3000,
    });
  });

  it("two batches in the same millisecond count as 1 ms apart: 1 task in 1 ms, 8 left → 8 ms", () => {
    const started = fresh(10, { done: 1, answered: Uint8Array.from([1, 0]), throughputAt: 100, now: 100 });
    expect(afterResults(started, ok(1), 100, false)).toMatchObject({ throughput: 1000, etaMs: 8 });
  });

  it("a replay is counted and starts the rate's clock, but is no progress and leaves the rate as it was", () => {
    const running = fresh(10, {
      done: 1,
      answered: Uint8Array.from([1, 0]),
      throughput: 1,
      throughputAt: 5000,
      rateTasks: 1,
      rateMs: 1000,
      etaMs: 9000,
      now: 5000,
    });
    const next = afterResults(running, ok(4, 5, 6), 6000, true);
    // Answered before this actor, at a time it does not know: the last progress stays.
    expect(next).toMatchObject({ done: 4, throughputAt: 6000, now: 6000 });
    expect(next.lastProgressAt).toBe(running.lastProgressAt);
    expect(running.lastProgressAt).not.toBe(6000);
    for (const kept of ["rateTasks", "rateMs", "throughput", "etaMs"]) expect(next).not.toHaveProperty(kept);
  });

  it("duplicates change only `now`, and never move it back", () => {
    const seen = fresh(2, { done: 1, answered: Uint8Array.from([1]), now: 900 });
    expect(afterResults(seen, ok(0), 1500, false)).toEqual({ now: 1500 });
    expect(afterResults(seen, ok(0), 700, false)).toEqual({ now: 900 });
  });

  it("a redrive alone lowers `dead` and is no progress", () => {
    const died = fresh(2, {
      dead: 1,
      answered: Uint8Array.from([0b10]),
      deadBits: Uint8Array.from([0b10]),
      lastProgressAt: 400,
      now: 400,
    });
    const next = afterResults(died, [{ i: 1, redrive: true }], 800, false);
    expect(next).toMatchObject({ done: 0, failed: 0, dead: 0, now: 800 });
    expect([...(next.answered ?? [])]).toEqual([0]);
    expect(next).not.toHaveProperty("lastProgressAt");
  });
});

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
const deadTotal = 40_000;
const perMessage = 20;

/** Every task answered by `entry`, in results messages of `perMessage`. */
const messages = (entry: (i: number) => ResultEntry): ResultEntry[][] => {
  const all: ResultEntry[][] = [];
  for (let start = 0; start < deadTotal; start += perMessage)
    all.push(Array.from({ length: perMessage }, (_, k) => entry(start + k)));
  return all;
};

/**
 * Counts the messages one at a time, as the job machine does: the counts, and the letters each
 * message copied (those in chunks it made anew rather than shared with the counts before it).
 */
const count = (batches: ResultEntry[][]) => {
  let progress = fresh(deadTotal);
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
      done: deadTotal,
      dead: 0,
      copiedPerMessage: 0,
    });
    // Each dead answer names its letter, as a worker writes it (`"l":<seq>`).
    const dead = count(messages((i) => ({ i, ok: false, e: "upstream down", dead: true, l: i + 1 })));
    expect(dead).toMatchObject({ done: 0, dead: deadTotal });
    // A chunk of letters (1,024 tasks) at most, and the message's own; the whole map copied at
    // each message was ~20,000 a message here (the square of the deaths, over the run).
    expect(dead.copiedPerMessage).toBeLessThanOrEqual(1024 + perMessage);
  });
});
