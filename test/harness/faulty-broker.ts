import type { Broker } from "../../src/adapters/broker.ts";
import type { SupervisionLeases } from "../../src/adapters/supervision-leases.ts";
import type { TaskLease } from "../../src/adapters/task-queue.ts";
import { PermanentBrokerError, TransientBrokerError } from "../../src/kernel/errors.ts";
import { isFinal } from "../../src/kernel/job-record.ts";

/**
 * Fault injection on the broker port, for tests on either broker: wraps a
 * `Broker` and makes chosen operations fail the way a real outage would
 * (a transient error, after the broker's own retries gave up), or loses an
 * ack on its way to the server.
 *
 * - `publishResults`: a results message is not stored (nothing reaches the broker);
 * - `finalize`: the write of a job's end to its record fails (not a write onto an end recorded);
 * - `raise`: a write onto an end recorded (the answers counted raised onto a cancel) fails;
 * - `lease`: a supervision lease renewal (and re-acquire), and the runtime's heartbeat that renews
 *   every lease it holds, fail — the lease store is unreachable;
 * - `ack`: a task's ack after its result was stored never reaches the broker (it is redelivered);
 * - `term`: a dead task's term, after its letter and dead answer were stored, never reaches the
 *   broker (its message stays stored until the server gives up on it: its advisory comes);
 * - `createConsumer`: the commit point of a submit fails;
 * - `commit`: the write of a submit's commit to its record (a lane job of several tasks: its
 *   commit point) fails, or (`lost`) is stored and its answer lost;
 * - `publishTasks`: a submit's task publish (the `before` hook runs first, e.g. to move a clock);
 *   `strand` makes the next one fail as an answer that never came, the publish kept to be stored
 *   later (`land`): a publish in flight that outlives its submit;
 * - `rollBack`: the mark of a submit's rollback on its record (its `before` hook only: it runs
 *   once the submitter found nothing of its submit stored, before the mark is written);
 * - `removeTasks`: the removal of a job's tasks, held ones included, and its consumer (a cancel's,
 *   an end's or a rollback's clean-up) fails: nothing of them is removed.
 * - `progress`: a write of a committed job's record that is neither its commit nor its end (its
 *   progress, a take's naming of its supervisor) fails.
 */
export type FaultPoint =
  | "publishResults"
  | "finalize"
  | "raise"
  | "lease"
  | "ack"
  | "term"
  | "createConsumer"
  | "commit"
  | "publishTasks"
  | "rollBack"
  | "removeTasks"
  | "progress";

interface Armed {
  /** Faults still to inject (Infinity: permanently). */
  left: number;
  /** The error's kind: a transient one (the default, an outage) or a permanent one (refused). */
  readonly kind: FaultKind;
  /** Only operations on this job (any job when undefined). */
  readonly jobId?: string;
}

export interface Faults {
  /** Fails the next `times` operations at `point` (Infinity: every one from now on). */
  fail(point: FaultPoint, times?: number, jobId?: string, kind?: FaultKind): void;
  /** Runs `hook` before each operation at `point` (before any injected failure). */
  before(point: FaultPoint, hook: (jobId: string) => void | Promise<void>): void;
  /** Stops injecting at `point`. */
  heal(point: FaultPoint): void;
  /** How many faults were injected at `point` so far: the ledger of what the test did. */
  injected(point: FaultPoint): number;
  /** How many operations on one job at `point` went through and were answered (`lease`: takes and renewals). */
  answered(point: FaultPoint): number;
  /**
   * The job's record updates this runtime sent, in the order answered: the revision each
   * stored, or `refused` (its compare-and-set failed, or the store failed it): who wrote what.
   */
  recordUpdates(jobId: string): readonly (number | "refused")[];
  /** From now on the runtime's record watch hands over no write of the job (a watch far behind). */
  unheard(jobId: string): void;
  /** How the job's task loops on this runtime ended so far, in order: `gone` (its consumer deleted and the job over) or `stopped`. */
  loopEnds(jobId: string): readonly ("gone" | "stopped")[];
  /**
   * The job's lane deliveries this runtime's lane loop has taken so far: handed to its callback
   * and returned from (a task of a job not committed yet is held by then, unrun).
   */
  laneTaken(jobId: string): number;
  /**
   * The next task publish fails as a timeout does (transient: its answer never came) and is
   * kept, not stored, until `land` stores it as it was sent (its bodies and message ids).
   */
  strand(): void;
  /** Stores the publishes `strand` kept, in order; resolves once the broker has them. */
  land(): Promise<void>;
}

export interface FaultyBroker {
  readonly broker: Broker;
  readonly faults: Faults;
}

/**
 * How an injected fault fails: as an outage (tried again), as a refusal (not), or as an answer
 * lost on its way back (`lost`: the operation is done, then fails as an outage would; the
 * record writes only).
 */
export type FaultKind = "transient" | "permanent" | "lost";

const injected = (kind: FaultKind, point: FaultPoint, jobId: string) => {
  const fields = { message: `injected fault: ${point} of ${jobId}`, operation: point };
  return kind === "permanent" ? new PermanentBrokerError(fields) : new TransientBrokerError(fields);
};

export const faultyBroker = (inner: Broker): FaultyBroker => {
  const armed = new Map<FaultPoint, Armed>();
  const hooks = new Map<FaultPoint, (jobId: string) => void | Promise<void>>();
  const counts = new Map<FaultPoint, number>();
  const answers = new Map<FaultPoint, number>();
  const unheardJobs = new Set<string>();
  const loopEnds = new Map<string, Array<"gone" | "stopped">>();
  const laneTaken = new Map<string, number>();
  const updates = new Map<string, Array<number | "refused">>();
  let stranding = false;
  const stranded: Array<Parameters<Broker["publishTasks"]>> = [];
  /** `inner`'s answer, counted at `point` once it comes. */
  const counted = async <A>(point: FaultPoint, inner: Promise<A>): Promise<A> => {
    const answer = await inner;
    answers.set(point, (answers.get(point) ?? 0) + 1);
    return answer;
  };

  /** How this operation must fail (and counts it), undefined: it does not; a `jobId` undefined is an operation on every job. */
  const take = (point: FaultPoint, jobId: string | undefined): FaultKind | undefined => {
    const fault = armed.get(point);
    if (!fault || fault.left <= 0) return undefined;
    if (fault.jobId !== undefined && jobId !== undefined && fault.jobId !== jobId) return undefined;
    fault.left--;
    counts.set(point, (counts.get(point) ?? 0) + 1);
    return fault.kind;
  };
  /** Runs the point's hook, then fails as an armed fault says; a `lost` fault is returned, for the caller to do the operation first. */
  const gate = async (point: FaultPoint, jobId: string | undefined): Promise<"lost" | undefined> => {
    if (jobId !== undefined) await hooks.get(point)?.(jobId);
    const kind = take(point, jobId);
    if (kind === "lost") return kind;
    if (kind) throw injected(kind, point, jobId ?? "every job");
    return undefined;
  };

  const faults: Faults = {
    fail: (point, times = 1, jobId, kind = "transient") => {
      // Only a record write is done before its answer is lost: armed elsewhere, it would be
      // counted as injected and change nothing.
      if (kind === "lost" && point !== "finalize" && point !== "raise" && point !== "commit")
        throw new Error(`a lost answer is injected at a record write only, not at ${point}`);
      armed.set(point, { left: times, kind, ...(jobId === undefined ? {} : { jobId }) });
    },
    before: (point, hook) => {
      hooks.set(point, hook);
    },
    heal: (point) => {
      armed.delete(point);
      hooks.delete(point);
    },
    injected: (point) => counts.get(point) ?? 0,
    answered: (point) => answers.get(point) ?? 0,
    recordUpdates: (jobId) => updates.get(jobId) ?? [],
    unheard: (jobId) => {
      unheardJobs.add(jobId);
    },
    loopEnds: (jobId) => loopEnds.get(jobId) ?? [],
    laneTaken: (jobId) => laneTaken.get(jobId) ?? 0,
    strand: () => {
      stranding = true;
    },
    land: async () => {
      for (const [record, bodies, , ids] of stranded.splice(0))
        await inner.publishTasks(record, bodies, new AbortController().signal, ids);
    },
  };

  /** A delivered task whose ack may be lost: the result is stored, the broker never hears of the ack. */
  const lossyLease = (jobId: string, lease: TaskLease): TaskLease => ({
    get body() {
      return lease.body;
    },
    get deliveryCount() {
      return lease.deliveryCount;
    },
    get seq() {
      return lease.seq;
    },
    ack: () => {
      if (!take("ack", jobId)) lease.ack();
    },
    nak: (delayMs) => lease.nak(delayMs),
    handBack: (delayMs) => lease.handBack(delayMs),
    term: () => {
      if (!take("term", jobId)) lease.term();
    },
    working: () => lease.working(),
    putBack: (keepEveryMs, wanted) => lease.putBack(keepEveryMs, wanted),
  });

  /** Whether the job's stored record already says how it ended. */
  const endedAlready = async (jobId: string): Promise<boolean> => {
    const found = await inner.getRecord(jobId).catch(() => undefined);
    return found !== undefined && isFinal(found.record.status);
  };

  const innerLeases = inner.leases;
  // Acquiring once it is armed fails too: a renewal that fails and then a re-acquire that
  // succeeds would not be an unreachable lease store.
  const leases = passThrough<SupervisionLeases>(innerLeases, {
    acquire: async (jobId: string, ttlMs: number, now?: number) => {
      await gate("lease", jobId);
      return counted("lease", innerLeases.acquire(jobId, ttlMs, now));
    },
    renew: async (jobId: string, ttlMs: number, now?: number) => {
      await gate("lease", jobId);
      return counted("lease", innerLeases.renew(jobId, ttlMs, now));
    },
    // It renews the leases of every job this runtime holds: a fault on any job's lease fails it.
    heartbeat: async (ttlMs: number, now?: number) => {
      await gate("lease", undefined);
      return innerLeases.heartbeat(ttlMs, now);
    },
  });

  // Only the fault points are wrapped; every other member of the port (present or added
  // later) passes through to the inner broker as it is.
  const broker = passThrough<Broker>(inner, {
    leases,
    updateRecord: async (record: Parameters<Broker["updateRecord"]>[0], revision: number) => {
      // The end of a job is the only write that makes a record final (a submit's rollback
      // is `failed` too, but its phase says rolledBack). A write onto a record already final
      // (answers raised onto a cancel) writes no end: that is `raise`.
      if (isFinal(record.status) && record.phase === "committed") {
        const point = (await endedAlready(record.id)) ? "raise" : "finalize";
        if ((await gate(point, record.id)) === "lost") {
          await inner.updateRecord(record, revision);
          throw injected("lost", point, record.id);
        }
      } else if (record.phase === "rolledBack") {
        await gate("rollBack", record.id);
      } else if (record.phase === "committed" && armed.has("commit")) {
        // A commit: the record as stored still says `submitting`.
        if ((await inner.getRecord(record.id))?.record.phase === "submitting") {
          if ((await gate("commit", record.id)) === "lost") {
            await inner.updateRecord(record, revision);
            throw injected("lost", "commit", record.id);
          }
        }
      }
      if (
        !isFinal(record.status) &&
        record.phase === "committed" &&
        (hooks.has("progress") || armed.has("progress")) &&
        (await inner.getRecord(record.id))?.record.phase === "committed"
      )
        await gate("progress", record.id);
      const noted = (outcome: number | "refused") =>
        updates.set(record.id, [...(updates.get(record.id) ?? []), outcome]);
      const stored = await inner.updateRecord(record, revision).catch((error: unknown) => {
        noted("refused");
        throw error;
      });
      noted(stored);
      return stored;
    },
    publishTasks: async (...args: Parameters<Broker["publishTasks"]>) => {
      await gate("publishTasks", args[0].id);
      if (stranding) {
        stranding = false;
        stranded.push(args);
        throw injected("transient", "publishTasks", args[0].id);
      }
      return inner.publishTasks(...args);
    },
    removeTasks: async (...args: Parameters<Broker["removeTasks"]>) => {
      await gate("removeTasks", args[0].id);
      return inner.removeTasks(...args);
    },
    createConsumer: async (...args: Parameters<Broker["createConsumer"]>) => {
      await gate("createConsumer", args[1]);
      return inner.createConsumer(...args);
    },
    consumeTasks: (...args: Parameters<Broker["consumeTasks"]>) => {
      const [queue, jobId, maxMessages, onTask, signal, stopping] = args;
      return inner
        .consumeTasks(
          queue,
          jobId,
          maxMessages,
          (lease) => onTask(lossyLease(jobId, lease)),
          signal,
          stopping,
        )
        .then((end) => {
          // Noted before the runtime hears it: a test that sees it sees what the runtime was told.
          loopEnds.set(jobId, [...(loopEnds.get(jobId) ?? []), end]);
          return end;
        });
    },
    consumeLane: (...args: Parameters<Broker["consumeLane"]>) => {
      const [queue, maxMessages, onTask, signal] = args;
      // Counted once the callback has returned (or its promise settled), whatever it did.
      const taken = (jobId: string) => laneTaken.set(jobId, (laneTaken.get(jobId) ?? 0) + 1);
      return inner.consumeLane(
        queue,
        maxMessages,
        (lease) => {
          const handled = onTask(lease);
          if (!(handled instanceof Promise)) {
            taken(lease.jobId);
            return handled;
          }
          return handled.finally(() => taken(lease.jobId));
        },
        signal,
      );
    },
    publishResults: async (...args: Parameters<Broker["publishResults"]>) => {
      await gate("publishResults", args[1]);
      return inner.publishResults(...args);
    },
    watchRecordChanges: (...args: Parameters<Broker["watchRecordChanges"]>) => {
      const [onRecord, ...rest] = args;
      return inner.watchRecordChanges(
        (record, revision) => (unheardJobs.has(record.id) ? undefined : onRecord(record, revision)),
        ...rest,
      );
    },
  });
  return { broker, faults };
};

/** `inner` with some members replaced; the rest read from `inner`, methods bound to it. */
const passThrough = <T extends object>(inner: T, overrides: Record<string, unknown>): T =>
  new Proxy(inner, {
    get(target, key) {
      if (typeof key === "string" && key in overrides) return overrides[key];
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
