import type { JobRecords } from "../adapters/job-records.ts";
import type { SupervisionLeases } from "../adapters/supervision-leases.ts";
import { Deposed } from "../kernel/errors.ts";
import { isFinal, type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import { type RecordSeen, updateRecordWith } from "./record-updates.ts";

/**
 * Whether a job's actor acts as its supervisor: its runtime holds the job's
 * lease, and the record names it, or names no one (never taken over). A
 * lease alone is timing: a holder stalled past it (an event loop held up,
 * GC, a clock set back) still believes it holds it when it wakes.
 */
export const actsAsSupervisor = (
  leases: Pick<SupervisionLeases, "holds">,
  seen: RecordSeen,
  jobId: string,
  now: number,
): boolean => seen.fenced !== false && leases.holds(jobId, now);

/**
 * A taker's first act, once it holds the job's lease: the record, as it
 * read it, written naming this runtime (`supervisor`, a compare-and-set
 * that moves its revision on). Every write of the supervisor it took the
 * job from was a compare-and-set on an older revision: it fails, and read
 * again names another supervisor, so that one writes nothing more
 * (`fenceOf`, record-updates.ts). A record named otherwise than the taker
 * first read it, by a write between its read and its own, is another
 * taker's since: this one steps down (`Deposed`). `over`: the job's end is
 * recorded; `later`: its submit is not committed yet; a record gone is
 * taken (nothing to name, no one to fence off).
 */
export const takeRecord = async (
  port: JobRecords,
  jobId: string,
  seen: RecordSeen,
  /** This runtime's lease holder. */
  holder: string,
): Promise<"taken" | "over" | "later"> => {
  seen.holder = holder;
  // From a read: the record this actor last wrote may be one a taker has written over since.
  seen.last = undefined;
  seen.lastUnwritten = false;
  let outcome = "later" as "taken" | "over" | "later";
  /** The supervisor the record named at the first read (null: none). */
  let named: string | null | undefined;
  const take = (record: JobRecord): JobRecord | undefined => {
    if (isFinal(record.status)) {
      outcome = "over";
      return undefined;
    }
    if (record.phase !== SubmitPhase.committed) return undefined;
    const name = record.supervisor ?? null;
    if (named === undefined) named = name;
    else if (name !== named && name !== holder)
      throw new Deposed({
        message: `job ${jobId} was taken over by ${name} since`,
        jobId,
        supervisor: name ?? "",
      });
    outcome = "taken";
    return { ...record, supervisor: holder };
  };
  // Its own write names it over another's name: not fenced (`fenceOf`); a write of this actor's
  // still in flight is.
  seen.taking = take;
  const stored = await updateRecordWith(port, jobId, take, 10, seen).finally(() => {
    seen.taking = undefined;
  });
  // No record (a server back with an empty store): none to name it in, and no supervisor to fence
  // off; the taker acts, and its lost-task check records the job lost (`recordLost` makes it again).
  if (stored === undefined) {
    seen.fenced = true;
    return "taken";
  }
  if (outcome === "taken") seen.fenced = true;
  return outcome;
};
