/**
 * What a chaos run is checked and measured against, computed from witnesses
 * outside jetstate: the workers' ledger files and the results stream as the
 * server stores it (test/harness/raw-results.ts). Pure functions.
 */
import { readFile } from "node:fs/promises";
import type { RawResultsMessage } from "../harness/raw-results.ts";

/** One line of a worker's ledger: a task its handler ran to the end. */
export interface LedgerEntry {
  readonly index: number;
  readonly attempt: number;
  readonly at: number;
}

/** Every ledger line of every file; a malformed line is an error (a ledger is never half-written). */
export const readLedgers = async (files: readonly string[]): Promise<LedgerEntry[]> => {
  const entries: LedgerEntry[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      // A worker that handled nothing yet has no ledger file.
      if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw error;
    }
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const match = /^(\d+) (\d+) (\d+)$/.exec(line);
      if (match === null) throw new Error(`${file}: malformed ledger line ${JSON.stringify(line)}`);
      entries.push({ index: Number(match[1]), attempt: Number(match[2]), at: Number(match[3]) });
    }
  }
  return entries;
};

/** Distinct task indexes in the ledger. */
export const handledIndexes = (ledger: readonly LedgerEntry[]): Set<number> =>
  new Set(ledger.map((e) => e.index));

/** Runs beyond the first, over all tasks: the work done twice. */
export const duplicateRuns = (ledger: readonly LedgerEntry[]): number =>
  ledger.length - handledIndexes(ledger).size;

/** The indexes of 0..total-1 missing from `seen`. */
export const missing = (seen: ReadonlySet<number>, total: number): number[] =>
  Array.from({ length: total }, (_, i) => i).filter((i) => !seen.has(i));

export interface Counts {
  readonly done: number;
  readonly failed: number;
  readonly dead: number;
}

/**
 * The counts a job must end with, from the raw results: a task counts once,
 * by the first answer stored for it (a later one is a duplicate), unless a
 * redrive marker cleared it. Entries stored but not unique are returned too.
 */
export const countsFromRawResults = (
  messages: readonly RawResultsMessage[],
): Counts & { readonly indexes: Set<number>; readonly storedDuplicates: number } => {
  const first = new Map<number, { ok?: boolean; dead?: boolean }>();
  let entries = 0;
  for (const m of messages) {
    for (const e of m.entries) {
      if (e.redrive === true) {
        first.delete(e.i);
        continue;
      }
      entries++;
      if (!first.has(e.i)) first.set(e.i, e);
    }
  }
  const answers = [...first.values()];
  return {
    done: answers.filter((a) => a.ok === true).length,
    failed: answers.filter((a) => a.ok !== true && a.dead !== true).length,
    dead: answers.filter((a) => a.ok !== true && a.dead === true).length,
    indexes: new Set(first.keys()),
    storedDuplicates: entries - first.size,
  };
};

/** A fault injected into the run, and when (ms since the epoch). */
export interface Fault {
  readonly what: string;
  readonly at: number;
}

export interface FaultRecovery {
  readonly what: string;
  /** ms from the job's submit to the fault. */
  readonly atMs: number;
  /** ms from the fault to the next results message stored; undefined when none came. */
  readonly firstResultMs: number | undefined;
  /**
   * The longest time without a results message stored, from the fault until
   * the next fault (a stretch that goes on past it is cut there) or the job's
   * end: how long the work stood still
   * (undefined when the run failed before the results were read).
   */
  readonly longestGapMs: number | undefined;
  /** The leader elections after it (`electionsAfter`), when they were watched. */
  readonly elections?: string;
}

/**
 * Recovery after each fault, from the results stream's own timestamps: the
 * first result stored after it, and the longest stretch without one until
 * the next fault (or the end).
 */
export const recoveries = (
  faults: readonly Fault[],
  messages: readonly RawResultsMessage[],
  submittedAt: number,
  endedAt: number,
): FaultRecovery[] => {
  const times = messages.map((m) => m.at).sort((a, b) => a - b);
  return faults.map((fault, n) => {
    const until = faults[n + 1]?.at ?? endedAt;
    let firstResultMs: number | undefined;
    let longestGapMs = 0;
    let last = fault.at;
    let closed = false;
    for (const t of times) {
      if (t <= fault.at) continue;
      firstResultMs ??= t - fault.at;
      // A stretch that goes on past the next fault counts up to that fault: the rest is the next one's.
      longestGapMs = Math.max(longestGapMs, Math.min(t, until) - last);
      last = t;
      if (t > until) {
        closed = true;
        break;
      }
    }
    // Nothing stored after the window: the work stood still from the last result to its end.
    if (!closed) longestGapMs = Math.max(longestGapMs, until - last);
    return {
      what: fault.what,
      atMs: Math.round(fault.at - submittedAt),
      firstResultMs: firstResultMs === undefined ? undefined : Math.round(firstResultMs),
      longestGapMs: Math.round(longestGapMs),
    };
  });
};

/** A stream or consumer leader elected (the server's advisory), with the server's time. */
export interface Election {
  /** `stream <name>` or `consumer <stream>/<name>`. */
  readonly of: string;
  readonly leader: string;
  readonly at: number;
}

/**
 * The leader elections that followed each fault (until the next one): what
 * the cluster itself took to serve again, beside the stall the job saw. A
 * stall much longer than the last election is the client's; one that ends
 * with it is the server's. Each as `<what> +<ms>` from the fault.
 */
export const electionsAfter = (faults: readonly Fault[], elections: readonly Election[]): string[] =>
  faults.map((fault, n) => {
    const until = faults[n + 1]?.at ?? Number.POSITIVE_INFINITY;
    const seen = elections
      .filter((e) => e.at > fault.at && e.at <= until)
      .sort((a, b) => a.at - b.at)
      .map((e) => `${e.of} → ${e.leader} +${Math.round(e.at - fault.at)} ms`);
    return seen.length === 0 ? "none" : seen.join(", ");
  });
