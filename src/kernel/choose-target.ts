import type { AgentRecord, SkipEntry } from "./agent-record.ts";

/**
 * The switch decision, as pure functions of a freshly read record. The lock
 * actor evaluates it under the lock, after the re-read: that ordering is what
 * turns a burst of N failures into one switch instead of a cascade A→B→C.
 */

export interface FailureToEvaluate {
  /** The target the failure was observed on. */
  readonly target: string;
  readonly reason: string;
}

/**
 * What one failure means for the agent, given the record read under the lock
 * (`record` at `revision`). `next`, when present, is the record to CAS-write.
 */
export type Decision =
  /** The agent already left the failed target (another failure won): nothing to do. */
  | { readonly kind: "stale"; readonly record: AgentRecord; readonly revision: number }
  /** Write `next`, then tell the agent to move `from` → `to`. */
  | {
      readonly kind: "switch";
      readonly from: string;
      readonly to: string;
      readonly record: AgentRecord;
      readonly next: AgentRecord;
      readonly revision: number;
    }
  /** No eligible alternative: stay; `next` is undefined when the spell is already recorded. */
  | {
      readonly kind: "exhausted";
      readonly record: AgentRecord;
      readonly next: AgentRecord | undefined;
      readonly revision: number;
    };

/** Skip entries still in force at `now`; expired ones are dropped on the next write. */
export const activeSkips = (skips: readonly SkipEntry[], now: number): SkipEntry[] =>
  skips.filter((skip) => skip.until > now);

const isSkipped = (target: string, skips: readonly SkipEntry[], now: number): boolean =>
  skips.some((skip) => skip.target === target && skip.until > now);

/** Targets the agent may move to from `record.current`: configured, not current, not skipped. */
export const eligibleTargets = (targets: readonly string[], record: AgentRecord, now: number): string[] =>
  targets.filter((target) => target !== record.current && !isSkipped(target, record.skips, now));

/**
 * The least-loaded eligible target. A load that is missing or not a finite
 * number means the target is failing (its probe threw or it reports nothing
 * usable), so it is never chosen. Ties go to the earlier target in the list,
 * so every process makes the same choice from the same inputs.
 */
export const chooseTarget = (
  candidates: readonly string[],
  loads: ReadonlyMap<string, number | undefined>,
): string | undefined => {
  let best: { target: string; load: number } | undefined;
  for (const target of candidates) {
    const load = loads.get(target);
    if (load === undefined || !Number.isFinite(load)) continue;
    if (best === undefined || load < best.load) best = { target, load };
  }
  return best?.target;
};

export interface DecideInput {
  readonly record: AgentRecord;
  readonly revision: number;
  readonly failure: FailureToEvaluate;
  readonly targets: readonly string[];
  /** Load of each eligible target; see `chooseTarget` for missing entries. */
  readonly loads: ReadonlyMap<string, number | undefined>;
  readonly now: number;
  readonly skipForMs: number;
}

export const isStale = (record: AgentRecord, failure: FailureToEvaluate): boolean =>
  record.current !== failure.target;

export const decide = (input: DecideInput): Decision => {
  const { record, revision, failure, now } = input;
  if (isStale(record, failure)) return { kind: "stale", record, revision };
  const to = chooseTarget(eligibleTargets(input.targets, record, now), input.loads);
  const skips = activeSkips(record.skips, now);
  if (to === undefined) {
    // Only the first failure of an exhausted spell is written, so a burst on a
    // target with nowhere to go costs reads, not a write per failure.
    const recorded = record.exhausted?.target === failure.target;
    const next: AgentRecord | undefined = recorded
      ? undefined
      : { ...record, skips, exhausted: { target: failure.target, at: now } };
    return { kind: "exhausted", record, next, revision };
  }
  const { exhausted: _cleared, ...rest } = record;
  const next: AgentRecord = {
    ...rest,
    current: to,
    skips: [
      ...skips.filter((skip) => skip.target !== failure.target),
      { target: failure.target, until: now + input.skipForMs },
    ],
    switches: record.switches + 1,
    lastSwitch: { from: failure.target, to, at: now, reason: failure.reason },
  };
  return { kind: "switch", from: failure.target, to, record, next, revision };
};

/** A short, storable reason from whatever a caller reported as the error. */
export const describeFailure = (error: unknown): string => {
  const text =
    error instanceof Error
      ? error.message || error.name
      : typeof error === "string"
        ? error
        : typeof error === "object" && error !== null && "message" in error
          ? String((error as { message: unknown }).message)
          : String(error);
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
};
