import type { JobCounts } from "./job-record.ts";
import { type ByTask, ChunkChanges, valueAt } from "./task-chunks.ts";

/**
 * A job's progress as its answers arrive: which tasks are answered (each
 * counted once), how fast they come, and the estimated time to the end.
 * Pure arithmetic on values: the job machine keeps these fields in its
 * context and hands each results batch to `afterResults`.
 */

/** One answered task, as read from a results message. */
export interface ResultEntry {
  /** Task index within the job. */
  readonly i: number;
  /** Absent on a redrive marker (`{ i, redrive: true }`, as `jobs.redrive` writes it). */
  readonly ok?: boolean;
  /** Exhausted its deliveries (a dead letter), rather than failed permanently. */
  readonly dead?: boolean;
  /** The dead task was sent back to the workers: forget its answer. */
  readonly redrive?: boolean;
  /** A redrive marker's redrive (the record's `redrive`); absent in markers written before it. */
  readonly id?: string;
  /**
   * A dead answer's letter, or the letters of its task a redrive marker sends back (sequences in
   * the dead-letter store, kernel/wire.ts); absent in entries of earlier versions.
   */
  readonly l?: number | readonly number[];
  /**
   * A dead answer a refused redrive stored again: its marker had taken it back, and no copy of
   * the task runs (`encodeDeathAgain`, kernel/wire.ts). Never taken back as it lands
   * (`takenAhead`): another redrive's marker ahead of it was refused too.
   */
  readonly again?: boolean;
}

/** The letter a dead answer names (undefined: none, an earlier version's or its letter not stored). */
export const letterOf = (entry: ResultEntry): number | undefined =>
  typeof entry.l === "number" ? entry.l : undefined;

/**
 * Whether a redrive marker takes back the dead answer of its task that names `letter`: only if
 * it sends that letter back. A marker of a redrive that read the letters before the copy another
 * redrive sent died again, landing after that new death, names the older letter only: it took
 * the new death back, no copy followed (its task's id was used), and the job waited for the task
 * until it stalled. Either one naming no letter (written by an earlier version): it does, as then.
 * Of the same submit only: readers see no entry naming another submit of the key than theirs
 * (`answersOfSubmit`, result-wire.ts), a marker of a 1-task lane job's redrive included.
 */
export const takesBack = (marker: ResultEntry, letter: number | undefined): boolean =>
  !Array.isArray(marker.l) || letter === undefined || marker.l.includes(letter);

/**
 * Whether `entry` is a dead answer a redrive's marker took back before it landed: it names one
 * of `ahead`, the letters markers stored while its task had no answer counted sent back. A worker
 * stores a task's letter before its dead answer, so a redrive may read the letter and store its
 * marker first; counted, that death stood, the redrive's copy ran with its answer a duplicate,
 * and the redrive removed the letter: the job ended counting the task dead with no letter to
 * redrive it by (redrive-death-after-marker.both.test.ts). Taken back, the task waits for the
 * copy's answer. A dead answer naming no letter (an earlier version's, or its letter not
 * stored) is never one: counted, as then.
 */
export const takenAhead = (ahead: readonly number[] | undefined, entry: ResultEntry): boolean => {
  const letter = letterOf(entry);
  return (
    entry.ok !== true &&
    entry.dead === true &&
    entry.again !== true &&
    letter !== undefined &&
    ahead?.includes(letter) === true
  );
};

/**
 * The letters a marker sends back besides `taken`, the letter of the death it took back (all of
 * them when that death names none): each is ahead of a death of the same delivery still to
 * land. A task may have two letters for one death (the worker's, stored before it hung past its
 * lease, and the advisory's whose dead answer landed first): its marker took the first death
 * back, and the worker's, landing after, was counted, the copy's answer dropped as a duplicate,
 * the task dead with both letters removed (a review, job-progress.test.ts).
 */
export const othersAhead = (marker: ResultEntry, taken: number | undefined): readonly number[] =>
  Array.isArray(marker.l) ? marker.l.filter((l) => l !== taken) : [];

export interface JobProgress extends JobCounts {
  readonly total: number;
  /**
   * One bit per task: answered already. Replaced (copy on write), never
   * mutated, so snapshots stay values (model-based tests rely on it); the copy
   * is a few KB per results batch of up to 100 results.
   */
  readonly answered: Uint8Array;
  /** The subset of `answered` that died: only those may be redriven. */
  readonly deadBits: Uint8Array;
  /**
   * The letter each dead task's counted answer names (`letterOf`), of those that name one:
   * which marker takes it back (`takesBack`). Absent: none. Replaced, never mutated.
   */
  readonly deadLetters?: DeadLetterSeqs;
  /**
   * The letters redrive markers sent back while their task had no answer counted, by task
   * index: the dead answer naming one is taken back as it lands (`takenAhead`). Kept for the
   * job's life (a letter's death comes once; few tasks have any). Absent: none. Replaced, never
   * mutated.
   */
  readonly lettersAhead?: LettersAhead;
  readonly lastProgressAt: number;
  /** Tasks answered per second, exponentially weighted (time constant 10 s). */
  readonly throughput: number;
  /** When the rate was last sampled; null until the first answer (the rate's clock starts there). */
  readonly throughputAt: number | null;
  /** Decayed sums behind `throughput`: tasks and milliseconds, from the first answer on (0 before it). */
  readonly rateTasks: number;
  readonly rateMs: number;
  readonly etaMs: number | null;
  readonly now: number;
}

/** The rate's memory: a sample this long ago weighs 1/e of a fresh one. */
const rateTauMs = 10_000;

/** Tasks not answered yet. */
export const remaining = (p: JobCounts & { readonly total: number }): number =>
  p.total - p.done - p.failed - p.dead;

/** What a batch added: answers new to the bitmaps, and the bitmaps with them (copies). */
export interface CountedAnswers extends JobCounts {
  /** Answers not seen before; a redrive is not one (it takes an answer back: `dead` goes down). */
  readonly added: number;
  readonly answered: Uint8Array;
  readonly deadBits: Uint8Array;
  readonly deadLetters: DeadLetterSeqs | undefined;
  readonly lettersAhead: LettersAhead | undefined;
  /**
   * False when the batch changed no bit and no letter ahead (only duplicates, unknown indexes,
   * redrives of live tasks, deaths taken back as they land).
   */
  readonly changed: boolean;
}

// Every index is checked against `total` first, so its byte exists: `?? 0` only satisfies the type.
const hasBit = (bits: Uint8Array, i: number) => ((bits[i >> 3] ?? 0) & (1 << (i & 7))) !== 0;
const setBit = (bits: Uint8Array, i: number, on: boolean) => {
  const byte = i >> 3;
  const mask = 1 << (i & 7);
  const old = bits[byte] ?? 0;
  bits[byte] = on ? old | mask : old & ~mask;
};

/**
 * The dead bits of a job none of whose tasks died: one empty bitmap shared
 * by every job (reads of it say "not dead"), its own made at its first dead
 * task. A live job held a bitmap of its own it almost never used, ~180
 * bytes of heap with its buffer.
 */
export const noDeadBits = new Uint8Array(0);

/** A copy of `bits` to change, `bytes` long (an empty shared one grows to its job's size). */
const copyOf = (bits: Uint8Array, bytes: number): Uint8Array => {
  const copy = new Uint8Array(Math.max(bytes, bits.length));
  copy.set(bits);
  return copy;
};

/**
 * The letters of a job's dead tasks, by task index, in chunks (`ByTask`, kernel/task-chunks.ts): a
 * batch that changes some copies the chunks it changes and the list of them, not every letter.
 * One map copied whole at each batch holding a death made counting an outage's deaths grow
 * with their square (40,000 dead tasks: seconds against milliseconds succeeded; a review,
 * `job-progress.test.ts`).
 */
export type DeadLetterSeqs = ByTask<number>;

/** The letters markers sent back ahead of their task's death (`JobProgress.lettersAhead`), chunked the same way. */
type LettersAhead = ByTask<readonly number[]>;

/**
 * Counts the entries not seen before, in copies of the bitmaps made at the
 * first bit a batch changes (the inputs stay as they were; a batch that
 * changes none answers with them).
 */
export const countAnswers = (
  progress: Pick<JobProgress, "total" | "answered" | "deadBits" | "deadLetters" | "lettersAhead">,
  entries: readonly ResultEntry[],
): CountedAnswers => {
  let done = 0;
  let failed = 0;
  let dead = 0;
  let added = 0;
  const bytes = Math.ceil(progress.total / 8);
  let answered: Uint8Array | undefined;
  let deadBits: Uint8Array | undefined;
  // Made at the first letter a batch changes: a batch of successes allocates nothing for them.
  let letters: ChunkChanges<number> | undefined;
  const changeLetter = (i: number, letter: number | undefined) => {
    letters ??= new ChunkChanges(progress.deadLetters);
    letters.set(i, letter);
  };
  // Made at the first marker a batch finds ahead of its task's death: most batches have none.
  let ahead: ChunkChanges<readonly number[]> | undefined;
  const aheadOf = (i: number) => (ahead ? ahead.get(i) : valueAt(progress.lettersAhead, i));
  for (const entry of entries) {
    const i = entry.i;
    if (!Number.isInteger(i) || i < 0 || i >= progress.total) continue;
    if (entry.redrive) {
      if (!hasBit(deadBits ?? progress.deadBits, i)) {
        // No answer counted: the letters it sends back are ahead of their death (`takenAhead`).
        if (Array.isArray(entry.l) && entry.l.length > 0 && !hasBit(answered ?? progress.answered, i)) {
          ahead ??= new ChunkChanges(progress.lettersAhead);
          ahead.set(i, [...(ahead.get(i) ?? []), ...entry.l]);
        }
        continue;
      }
      const letter = letters ? letters.get(i) : valueAt(progress.deadLetters, i);
      if (!takesBack(entry, letter)) continue;
      const others = othersAhead(entry, letter);
      if (others.length > 0) {
        ahead ??= new ChunkChanges(progress.lettersAhead);
        ahead.set(i, [...(ahead.get(i) ?? []), ...others]);
      }
      deadBits ??= copyOf(progress.deadBits, bytes);
      answered ??= copyOf(progress.answered, bytes);
      setBit(deadBits, i, false);
      setBit(answered, i, false);
      if (letter !== undefined) changeLetter(i, undefined);
      dead--;
      continue;
    }
    if (hasBit(answered ?? progress.answered, i)) continue; // a redelivered task answered twice counts once
    if (entry.dead && takenAhead(aheadOf(i), entry)) continue; // the redrive's copy answers for it
    answered ??= copyOf(progress.answered, bytes);
    setBit(answered, i, true);
    added++;
    if (entry.ok) done++;
    else if (entry.dead) {
      dead++;
      deadBits ??= copyOf(progress.deadBits, bytes);
      setBit(deadBits, i, true);
      const letter = letterOf(entry);
      if (letter !== undefined) changeLetter(i, letter);
    } else failed++;
  }
  return {
    done,
    failed,
    dead,
    added,
    answered: answered ?? progress.answered,
    deadBits: deadBits ?? progress.deadBits,
    deadLetters: letters ? letters.result() : progress.deadLetters,
    lettersAhead: ahead ? ahead.result() : progress.lettersAhead,
    // Every change of a bit copies `answered` first.
    changed: answered !== undefined || ahead !== undefined,
  };
};

/**
 * Which tasks of a job were first answered by a success or by a failure that
 * is not a death, read from its results messages in order. Such an answer is
 * final (`countAnswers`: a task's first answer counts, and a redrive's marker
 * takes back a dead answer only), and it came before any dead letter of its
 * task: a worker stored it, its ack was lost on the task's last delivery, and
 * the server, hearing none, had the task dead-lettered. Such a letter is
 * stale. A task that died first and was answered after a redrive is not one
 * of them: its letter is that redrive's to remove, and what names a redrive
 * (the letters it sends back) must read the same when it is made again. Nor
 * is one whose dead answer a marker took back before it landed (`takenAhead`):
 * that death, read here as its first answer, came before the copy's answer.
 */
export class FirstAnswers {
  readonly #total: number;
  readonly #seen: Uint8Array;
  readonly #alive: Uint8Array;

  constructor(total: number) {
    this.#total = total;
    this.#seen = new Uint8Array(Math.ceil(total / 8));
    this.#alive = new Uint8Array(Math.ceil(total / 8));
  }

  add(entries: readonly ResultEntry[]): void {
    for (const { i, ok, dead, redrive } of entries) {
      if (redrive || !Number.isInteger(i) || i < 0 || i >= this.#total || hasBit(this.#seen, i)) continue;
      setBit(this.#seen, i, true);
      if (ok || !dead) setBit(this.#alive, i, true);
    }
  }

  /** First answered by a success or a failure that is not a death. */
  alive(index: number): boolean {
    return hasBit(this.#alive, index);
  }

  /** Every one of these tasks has its first answer read: later messages change nothing of theirs. */
  seenAll(indexes: Iterable<number>): boolean {
    for (const i of indexes) if (!hasBit(this.#seen, i)) return false;
    return true;
  }
}

/**
 * The rate after `tasks` answers came `dt` ms after the last sample: both
 * sums decay by e^(−dt/τ), then take the new sample; the rate is their
 * ratio, in tasks per second.
 */
export const sampleRate = (
  rate: Pick<JobProgress, "rateTasks" | "rateMs">,
  tasks: number,
  dt: number,
): Pick<JobProgress, "rateTasks" | "rateMs" | "throughput"> => {
  const decay = Math.exp(-dt / rateTauMs);
  const rateTasks = rate.rateTasks * decay + tasks;
  const rateMs = rate.rateMs * decay + dt;
  return { rateTasks, rateMs, throughput: (rateTasks * 1000) / rateMs };
};

/** Milliseconds until `left` tasks are answered at `throughput` per second; null without a rate. */
export const estimateEtaMs = (left: number, throughput: number): number | null =>
  left === 0 ? 0 : throughput > 0 ? Math.round((left / throughput) * 1000) : null;

/**
 * The progress fields after a batch of answers stamped `at` (only those that
 * change). `replay`: answers stored before the reader started (a takeover, a
 * restart): counted, but no rate sample, which would otherwise read as
 * thousands of tasks in a millisecond.
 */
export const afterResults = (
  progress: JobProgress,
  entries: readonly ResultEntry[],
  at: number,
  replay: boolean,
): Partial<JobProgress> => {
  const fresh = countAnswers(progress, entries);
  const now = Math.max(progress.now, at);
  if (!fresh.changed) return { now };
  const left = remaining(progress) - fresh.done - fresh.failed - fresh.dead;
  const counts = {
    answered: fresh.answered,
    deadBits: fresh.deadBits,
    ...(fresh.deadLetters === undefined ? {} : { deadLetters: fresh.deadLetters }),
    ...(fresh.lettersAhead === undefined ? {} : { lettersAhead: fresh.lettersAhead }),
    done: progress.done + fresh.done,
    failed: progress.failed + fresh.failed,
    dead: progress.dead + fresh.dead,
    now,
  };
  // Only redrives: answers forgotten, no progress made.
  if (fresh.added === 0) return counts;
  // The rate is measured from the first answer on, not from the commit: until then the
  // workers were finding the job and running their first tasks, a delay that does not
  // come back and that made the early ETA far too long. A replay says nothing about
  // the rate either. Both are counted and start the rate's clock.
  if (replay || progress.throughputAt === null) {
    return {
      ...counts,
      // Replayed answers were given before this actor, at a time it does not know: no progress
      // here (the job machine takes those its record did not have for progress).
      lastProgressAt: replay ? progress.lastProgressAt : at,
      throughputAt: at,
      ...(left === 0 ? { etaMs: 0 } : {}),
    };
  }
  // Two batches in the same millisecond count as 1 ms apart: no division by zero.
  const rate = sampleRate(progress, fresh.added, Math.max(1, at - progress.throughputAt));
  return {
    ...counts,
    ...rate,
    lastProgressAt: at,
    throughputAt: at,
    etaMs: estimateEtaMs(left, rate.throughput),
  };
};
