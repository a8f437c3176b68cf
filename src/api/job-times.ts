import type { Broker } from "../adapters/broker.ts";
import { aheadOfServerAtMost, type Clock, type SteadyClock } from "../kernel/clock.ts";
import { isFinal, type JobRecord, type JobStatus } from "../kernel/job-record.ts";
import type { JobInput } from "../machines/job-context.ts";

/**
 * When the record's last write was made, on this runtime's clock: the
 * server's stamp of it (`storedAt`) moved by how far this clock runs ahead
 * of the server's, at most (the leases' reading, its round trip counted in:
 * a stall read late by up to it, never early); its writer's `updatedAt`
 * when either is unknown.
 */
const lastWriteOn = (clock: Clock, broker: Broker, record: JobRecord, storedAt: number | undefined) => {
  const seen = broker.leases.serverTime();
  return storedAt === undefined || seen === undefined
    ? record.updatedAt
    : storedAt + aheadOfServerAtMost(clock.now(), seen);
};

/**
 * The times a job's actor starts with, on the runtime's steady clock (every
 * time its machine gets is: a step of the wall clock is no time gone by).
 * The wall-clock stamps it starts from (a finished job's end, a stalled
 * job's last write) are moved onto it by their age: they still mean "that
 * long ago", whatever the wall clock was stepped by since the steady one
 * was made (`wallAhead`, which the job's snapshot adds back).
 */
export const jobStartTimes = (
  clock: Clock,
  steady: SteadyClock,
  broker: Broker,
  record: JobRecord,
  resumeFrom: JobStatus | undefined,
  /** When the server stored the record read (`RecordFound.storedAt`). */
  storedAt: number | undefined,
): Pick<JobInput, "now" | "wallAhead" | "stalledSince"> => {
  const wallAhead = steady.wallAhead();
  return {
    // A finished job's clocks stop at its end: its last answer is when it ended, not now.
    now:
      resumeFrom && isFinal(resumeFrom) ? (record.finishedAt ?? record.updatedAt) - wallAhead : steady.now(),
    wallAhead,
    // Stalled since its record's last write: the stall's, or a later one that left it stalled
    // (a restore, a redrive): a takeover or a watcher counts the stalled timeout from there,
    // never from before the stall, and not from now. By the server's stamp of that write, on
    // this runtime's clock, where both are known: by the writer's clock a taker a minute
    // ahead of it failed the job "stalled too long" at once.
    ...(resumeFrom === "stalled"
      ? { stalledSince: lastWriteOn(clock, broker, record, storedAt) - wallAhead }
      : {}),
  };
};
