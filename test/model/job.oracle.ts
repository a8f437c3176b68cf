/**
 * A reference model of one job, written from the job's rules and not from
 * its machine (nothing here imports src/machines): the status, the counts and
 * the reason as plain functions of the event history. Model-based tests fold
 * the events a path sends (or the events a real actor received) through
 * `jobOracle` and compare every step with the live actor and with what the
 * broker holds.
 *
 * To teach it a new event, add a handler to `handlers`.
 */

export type JobStatus = "queuing" | "running" | "stalled" | "succeeded" | "failed";

export interface OracleSettings {
  readonly maxFailures: number;
  readonly stallAfterMs: number;
  readonly stalledTimeoutMs: number;
}

export interface OracleInput {
  readonly total: number;
  readonly settings: OracleSettings;
  readonly now: number;
  readonly resumeFrom?: JobStatus;
  readonly counts?: { readonly done: number; readonly failed: number; readonly dead: number };
  readonly reason?: string;
  /** A job resumed stalled: when its record says it stalled (now, if not given). */
  readonly stalledSince?: number;
}

type Answer = "ok" | "failed" | "dead";

export interface JobModel {
  readonly status: JobStatus;
  /** The end was handed to finalize and it settled (written or given up). */
  readonly recorded: boolean;
  readonly done: number;
  readonly failed: number;
  readonly dead: number;
  readonly reason: string | null;
  /** Answer per task index. */
  readonly answers: ReadonlyMap<number, Answer>;
  /** Last new answer, or the commit. */
  readonly lastProgressAt: number;
  readonly stalledSince: number | null;
  /**
   * What finalize is handed when this actor decides the end (null: it did not
   * decide one — still running, resumed finished, or ended as another
   * runtime recorded it, which nothing here writes).
   */
  readonly finalize: {
    readonly status: "succeeded" | "failed";
    readonly reason: string | null;
    readonly counts: { readonly done: number; readonly failed: number; readonly dead: number };
  } | null;
  /** How many ends were handed to finalize: one, or one more after each reopen (0: none). */
  readonly finalizes: number;
  /** The end came from the record (another runtime wrote it): adopted, not written here. */
  readonly adopted: boolean;
  /** The counts of the record as last heard (or resumed from). */
  readonly recordedCounts: { readonly done: number; readonly failed: number; readonly dead: number };
}

/** An event as the job sees it: what the runtime sends, and the settlements of its submit/finalize. */
export type OracleEvent =
  | { type: "submit.committed"; at?: number }
  | { type: "submit.failed"; message: string }
  /**
   * `replay`: answers given before this actor (its first read on a resume): counted, no progress.
   * `reopen`: the end's write was refused (a redrive reopened the job): counted, the job runs again.
   */
  | {
      type: "results";
      entries: ReadonlyArray<Record<string, unknown>>;
      at: number;
      replay?: boolean;
      reopen?: boolean;
    }
  /** `supervising: false`: a watcher's tick (another runtime holds the lease): it ends nothing. */
  | { type: "tick"; now: number; supervising?: boolean }
  | { type: "cancel"; reason: string }
  /** The job's record as stored, seen by the record watch (another runtime may have written it). */
  | {
      type: "record";
      status: JobStatus;
      counts: { readonly done: number; readonly failed: number; readonly dead: number };
      reason: string | null;
    }
  | { type: "finalize.settled" };

const isEnd = (s: JobStatus) => s === "succeeded" || s === "failed";
const answered = (m: JobModel) => m.done + m.failed + m.dead;

/** At most ⌊maxFailures × total⌋ tasks may fail or die. */
const tolerated = (m: JobModel, input: OracleInput) =>
  m.failed + m.dead <= Math.floor(input.settings.maxFailures * input.total + 1e-9);

const end = (m: JobModel, status: "succeeded" | "failed", reason: string | null): JobModel => ({
  ...m,
  status,
  reason: reason ?? m.reason,
  stalledSince: null,
});

/** A job whose every task is answered is over: succeeded within its tolerance, failed beyond it. */
const decide = (m: JobModel, input: OracleInput): JobModel => {
  if (m.status !== "running" && m.status !== "stalled") return m;
  if (answered(m) < input.total) return m;
  return tolerated(m, input)
    ? end(m, "succeeded", null)
    : end(
        m,
        "failed",
        `${m.failed + m.dead} of ${input.total} tasks failed or died (tolerance ${input.settings.maxFailures})`,
      );
};

const count = (m: JobModel, entries: OracleEvent & { type: "results" }, total: number): JobModel => {
  const answers = new Map(m.answers);
  let fresh = 0;
  for (const e of entries.entries) {
    const i = e.i as number;
    if (!Number.isInteger(i) || i < 0 || i >= total) continue;
    if (e.redrive) {
      // A redrive forgets a dead answer, and only a dead one.
      if (answers.get(i) === "dead") answers.delete(i);
      continue;
    }
    if (answers.has(i)) continue; // answered twice (a redelivery): counted once
    answers.set(i, e.ok ? "ok" : e.dead ? "dead" : "failed");
    fresh++;
  }
  const of = (a: Answer) => [...answers.values()].filter((x) => x === a).length;
  return {
    ...m,
    answers,
    done: of("ok"),
    failed: of("failed"),
    dead: of("dead"),
    // A replay is progress only with answers the record did not have (given after its last write).
    lastProgressAt:
      fresh > 0 &&
      (!entries.replay ||
        of("ok") + of("failed") + of("dead") >
          m.recordedCounts.done + m.recordedCounts.failed + m.recordedCounts.dead)
        ? Math.max(entries.at, entries.replay ? m.lastProgressAt : entries.at)
        : m.lastProgressAt,
  };
};

type Handler<T extends OracleEvent["type"]> = (
  m: JobModel,
  e: Extract<OracleEvent, { type: T }>,
  input: OracleInput,
) => JobModel;

const handlers: { [T in OracleEvent["type"]]: Handler<T> } = {
  "submit.committed": (m, e) =>
    m.status === "queuing"
      ? { ...m, status: "running", lastProgressAt: Math.max(e.at ?? m.lastProgressAt, m.lastProgressAt) }
      : m,
  "submit.failed": (m, e) => (m.status === "queuing" ? end(m, "failed", `submit failed: ${e.message}`) : m),
  results: (m, e, input) => {
    // An end decided but not recorded, whose write a redrive refused: the job runs again, no
    // reason, decided anew from these answers (the redrive's marker among them).
    if (e.reopen && isEnd(m.status) && !m.recorded)
      return { ...count(m, e, input.total), status: "running", reason: null, stalledSince: null };
    if (m.status !== "running" && m.status !== "stalled") return m;
    const next = count(m, e, input.total);
    // A stalled job runs again on an answer stamped at or after the stall began.
    if (next.status === "stalled" && next.stalledSince !== null && next.lastProgressAt >= next.stalledSince)
      return { ...next, status: "running", stalledSince: null };
    return next;
  },
  tick: (m, e, input) => {
    const { stallAfterMs, stalledTimeoutMs } = input.settings;
    if (m.status === "running" && answered(m) < input.total && e.now - m.lastProgressAt >= stallAfterMs)
      return { ...m, status: "stalled", stalledSince: e.now };
    if (
      m.status === "stalled" &&
      e.supervising !== false &&
      stalledTimeoutMs > 0 &&
      m.stalledSince !== null &&
      e.now - m.stalledSince >= stalledTimeoutMs
    )
      return end(
        m,
        "failed",
        `stalled: no progress for ${e.now - m.lastProgressAt} ms with ${input.total - answered(m)} tasks left`,
      );
    return m;
  },
  cancel: (m, e) => (isEnd(m.status) ? m : end(m, "failed", `cancelled: ${e.reason}`)),
  // An end in the record is how the job ended, whatever this actor had decided (unless its
  // own end is already recorded); its answers never fewer than those counted here. The same
  // end as the one being recorded here gives its reason (another runtime's end of that
  // status: tasks lost where this one cancelled). Any other record says nothing the job
  // decides on.
  record: (m, e) => {
    if (m.recorded) return m;
    if (!isEnd(e.status)) return { ...m, recordedCounts: e.counts };
    if (e.status === m.status) return { ...m, reason: e.reason ?? m.reason };
    return {
      ...m,
      recordedCounts: e.counts,
      status: e.status,
      recorded: true,
      adopted: true,
      // The record's counts, or those counted here if they are more answers (never a mix).
      ...(e.counts.done + e.counts.failed + e.counts.dead >= answered(m) ? e.counts : {}),
      // The record's reason, none included (a success elsewhere has none, whatever was decided here).
      reason: e.reason,
      stalledSince: null,
    };
  },
  "finalize.settled": (m) => (isEnd(m.status) ? { ...m, recorded: true } : m),
};

export const initialModel = (input: OracleInput): JobModel => {
  const from = input.resumeFrom;
  const finished = from !== undefined && isEnd(from);
  const counts = finished && input.counts ? input.counts : { done: 0, failed: 0, dead: 0 };
  // Resumed stalled: stalled since the record says, its last progress a stallAfterMs before that.
  const stalledSince = from === "stalled" ? (input.stalledSince ?? input.now) : null;
  return {
    status: from === undefined ? "queuing" : finished || from === "stalled" ? from : "running",
    recorded: finished,
    ...counts,
    reason: input.reason ?? null,
    answers: new Map(),
    lastProgressAt: stalledSince === null ? input.now : stalledSince - input.settings.stallAfterMs,
    stalledSince,
    finalize: null,
    finalizes: 0,
    adopted: false,
    recordedCounts: input.counts ?? { done: 0, failed: 0, dead: 0 },
  };
};

export const stepModel = (m: JobModel, event: OracleEvent, input: OracleInput): JobModel => {
  const handled = (handlers[event.type] as Handler<typeof event.type>)(m, event as never, input);
  const next = decide(handled, input);
  // The end this actor decides is handed to finalize once, as decided (again after a reopen).
  const reopened = isEnd(m.status) && !isEnd(handled.status);
  if (isEnd(next.status) && (!isEnd(m.status) || reopened) && !next.adopted)
    return {
      ...next,
      finalizes: next.finalizes + 1,
      finalize: {
        status: next.status as "succeeded" | "failed",
        reason: next.reason,
        counts: { done: next.done, failed: next.failed, dead: next.dead },
      },
    };
  return next;
};

/** The job after `events`, and after each of them. */
export const jobOracle = (input: OracleInput, events: readonly OracleEvent[]): JobModel[] => {
  const states = [initialModel(input)];
  for (const e of events) states.push(stepModel(states.at(-1)!, e, input));
  return states;
};

/**
 * The oracle's name for a machine event (`submit.committed` and the
 * like), or undefined for events the job does not react to.
 */
export const fromMachineEvent = (event: { type: string; [k: string]: unknown }): OracleEvent | undefined => {
  switch (event.type) {
    case "submit.committed":
      return typeof event.at === "number"
        ? { type: "submit.committed", at: event.at }
        : { type: "submit.committed" };
    case "submit.failed":
      return { type: "submit.failed", message: (event.error as Error).message };
    case "results.received":
      return {
        type: "results",
        entries: event.entries as never,
        at: event.at as number,
        ...(event.replay === true ? { replay: true } : {}),
        ...(event.reopen === true ? { reopen: true } : {}),
      };
    case "clock.tick":
      return {
        type: "tick",
        now: event.now as number,
        ...(event.supervising === false ? { supervising: false } : {}),
      };
    case "job.cancel":
      return { type: "cancel", reason: event.reason as string };
    case "record.changed":
      return {
        type: "record",
        status: event.status as JobStatus,
        counts: event.counts as { done: number; failed: number; dead: number },
        reason: (event.reason as string | null) ?? null,
      };
    case "finalize.settled":
      return { type: "finalize.settled" };
    default:
      return undefined;
  }
};
