import { Cause, Effect, Exit } from "effect";
import type { Broker } from "../adapters/broker.ts";
import { shownRecord } from "../effects/finalize-job.ts";
import { reapSubmits } from "../effects/reap-submits.ts";
import { retryWith } from "../effects/retry.ts";
import { inBatches } from "../kernel/batches.ts";
import { RevisionConflict, RuntimeStopped } from "../kernel/errors.ts";
import { firstTime } from "../kernel/first-time.ts";
import {
  cancelledInSubmit,
  type FlowRecord,
  flowNodeOfKey,
  isSettled,
  type ObservedJob,
  stepFlow,
} from "../kernel/flow-record.ts";
import { isFinal, type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import { boundReason } from "../kernel/reason.ts";
import { cancelJobs, type FlowActs, submitNodes } from "./flow-submits.ts";
import type { Jobs } from "./jobs-face.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/** How often a driver looks at every flow not settled: what a flow whose driver died waits at most. */
const flowSweepMs = 2000;

/** A mark without its flow's record is left this long: the submit that wrote it may still write the record. */
const orphanMarkMs = 60_000;

/** A grace that makes every submit past its deadline: `reapSubmits` finishes a dead one at once. */
const anyDeadline = Number.NEGATIVE_INFINITY;

/** Subscribes to the runtime's job record changes; returns the unsubscribe. */
export type RecordChanges = (listener: (record: JobRecord) => void) => () => void;

/** Where a driver is about to write: a test hook that throws there is a driver dying at that step. */
export type FlowStepPoint = "record" | "submit" | "update" | "cancel";
export type FlowHook = (point: FlowStepPoint, flowId: string, node?: string) => void;

/**
 * Runs `decide` (read, decide, compare-and-set) again while another writer
 * got there first: each try reads afresh, so no stale plan is ever written.
 * Rejects with `RuntimeStopped` when the runtime stopped (`signal` aborted)
 * before or between the tries, as every other call of a stopped runtime
 * does: interrupted, Effect would say only "All fibers interrupted without
 * error".
 */
export const onConflictAgain = async <A>(decide: () => Promise<A>, signal: AbortSignal): Promise<A> => {
  const exit = await Effect.runPromiseExit(
    Effect.tryPromise({ try: decide, catch: (error) => error }).pipe(
      retryWith({ attempts: 21, initialDelayMs: 5 }, (error) => error instanceof RevisionConflict),
    ),
    { signal },
  );
  if (Exit.isSuccess(exit)) return exit.value;
  if (Cause.hasInterruptsOnly(exit.cause)) throw new RuntimeStopped({ message: "runtime stopped" });
  throw Cause.squash(exit.cause);
};

/** How a node's job looks from its record: none (or rolled back), being submitted, running, ended. */
const observe = (found: JobRecord | undefined): ObservedJob => {
  if (found === undefined || found.phase === SubmitPhase.rolledBack) return { kind: "none" };
  if (isFinal(found.status))
    return {
      kind: "ended",
      status: found.status as "succeeded" | "failed",
      ...(found.reason ? { reason: found.reason } : {}),
    };
  return found.phase === SubmitPhase.submitting ? { kind: "pending" } : { kind: "running" };
};

/**
 * Drives flows: steps a flow (`stepFlow`) from its record and its nodes' job
 * records, writes the record (compare-and-set; a conflict re-reads and steps
 * again), then submits and cancels what the step says. Stateless: every
 * runtime with the submitter role runs one, woken by the job
 * records of flow nodes as they change (their idempotency key names the flow)
 * and by a sweep of every flow not settled, so a flow whose driver died is
 * finished by another within `flowSweepMs`. Drivers racing on one flow do
 * the same step: a node's job is one job by its key.
 */
export class FlowDriver {
  readonly #core: RuntimeCore;
  readonly #broker: Broker;
  readonly #log: Logger;
  /** One step at a time per flow here; a wake during a step runs one more after it. */
  readonly #stepping = new Map<string, { again: boolean; done: Promise<void> }>();
  readonly #listeners = new Set<(record: FlowRecord) => void>();
  hook: FlowHook | undefined;

  readonly #watch: RecordChanges;
  readonly #acts: FlowActs;

  constructor(core: RuntimeCore, broker: Broker, jobs: Jobs, watch: RecordChanges) {
    this.#watch = watch;
    this.#core = core;
    this.#broker = broker;
    this.#acts = { broker, jobs, stopping: core.stopping, point: (at, id, node) => this.point(at, id, node) };
    this.#log = childLogger(core.logger, { actor: "flow" });
  }

  /** Starts the wake-ups and the sweep, on a runtime that may drive flows. */
  start(): void {
    // Stepping a flow submits its jobs: the submitter's calls and NATS grants (a supervisor's
    // grants cannot publish tasks). Every runtime that may submit drives flows.
    if (!this.#core.options.roles.has("submitter")) return;
    // The runtime's one record watch (the job registry's): no watch of its own.
    const unwatch = this.#watch((record) => {
      const node = flowNodeOfKey(record.idempotencyKey);
      if (node) void this.wake(node.flowId);
    });
    this.#core.stopping.addEventListener("abort", unwatch, { once: true });
    this.#core.loops.every("flow-sweep", flowSweepMs, () => this.#sweep(), "later");
  }

  /** Every record this runtime reads or writes, for the handles watching it here. */
  onRecord(listener: (record: FlowRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A record read here: handed to the handles. */
  seen(record: FlowRecord): void {
    for (const listener of [...this.#listeners]) listener(record);
  }

  /** Steps the flow soon (at once, or after the step running here). */
  wake(flowId: string): Promise<void> {
    const running = this.#stepping.get(flowId);
    if (running) {
      running.again = true;
      return running.done;
    }
    const entry = { again: false, done: Promise.resolve() };
    entry.done = (async () => {
      try {
        do {
          entry.again = false;
          await this.step(flowId).catch((error: unknown) => {
            if (this.#core.stopping.aborted) return;
            this.#log.warn({ flowId, err: error }, "flow step failed; the next wake or sweep steps it again");
          });
        } while (entry.again && !this.#core.stopping.aborted);
      } finally {
        this.#stepping.delete(flowId);
      }
    })();
    this.#stepping.set(flowId, entry);
    return entry.done;
  }

  /** The hook, if any, at a write; throwing there stops the step as a crash would. */
  point(point: FlowStepPoint, flowId: string, node?: string): void {
    this.hook?.(point, flowId, node);
  }

  /** One step of the flow: read, decide, write, then submit and cancel. */
  async step(flowId: string): Promise<FlowRecord | undefined> {
    const decided = await onConflictAgain(() => this.#decide(flowId), this.#core.stopping);
    if (!decided) return undefined;
    const { record, submit, cancel } = decided;
    this.seen(record);
    // Settled: nothing will happen to it any more, so the sweep need not read it again.
    if (isSettled(record)) await this.#broker.flows.unmarkLive(flowId);
    const { tried, refused } = await submitNodes(this.#acts, record, submit);
    if (refused.size > 0) {
      await onConflictAgain(async () => {
        const found = await this.#broker.flows.getFlow(flowId);
        if (!found) return;
        const nodes = { ...found.record.nodes };
        for (const [name, reason] of refused) {
          const node = nodes[name];
          if (node?.status === "submitting")
            nodes[name] = { ...node, status: "failed", reason: boundReason(`not submitted: ${reason}`) };
        }
        this.point("update", flowId);
        await this.#broker.flows.updateFlow(
          { ...found.record, nodes, updatedAt: this.#core.clock.now() },
          found.revision,
        );
      }, this.#core.stopping);
      void this.wake(flowId);
    }
    await cancelJobs(this.#acts, flowId, cancel);
    if (tried.length > 0) {
      // A cancel may have landed meanwhile. Its step found no job for a node still being
      // submitted here, wrote it cancelled and settled the flow, which no step looks at again:
      // the jobs this step submitted are cancelled by it.
      const now = await this.#broker.flows.getFlow(flowId);
      if (now?.record.status === "cancelled") {
        const made = tried.filter((name) => !refused.has(name));
        const nodeOf = new Map(
          made.map((name) => [(record.nodes[name] as FlowRecord["nodes"][string]).jobId, name]),
        );
        await cancelJobs(this.#acts, flowId, [...nodeOf.keys()], (jobId) => nodeOf.get(jobId));
        // A cancel not stepped yet: the next step cancels the flow's other running jobs.
        void this.wake(flowId);
      }
    }
    return record;
  }

  async #decide(
    flowId: string,
  ): Promise<{ record: FlowRecord; submit: readonly string[]; cancel: readonly string[] } | undefined> {
    const found = await this.#broker.flows.getFlow(flowId);
    if (!found) return undefined;
    if (isSettled(found.record))
      return { record: found.record, submit: [], cancel: await this.#landedAfterCancel(found.record) };
    const observed = new Map<string, ObservedJob>();
    await Promise.all(
      Object.entries(found.record.nodes).map(async ([name, node]) => {
        if (node.status === "waiting" || node.status === "skipped" || node.status === "cancelled") return;
        if (node.status === "succeeded" || node.status === "failed") return;
        // A lane job whose commit is not written yet is running; a submit under way, pending.
        observed.set(name, await this.#observeJob(node.jobId, found.record.status === "cancelled"));
      }),
    );
    const step = stepFlow(
      found.record,
      (name) => observed.get(name) ?? { kind: "none" },
      this.#core.clock.now(),
    );
    if (step.record !== found.record) {
      this.point("update", flowId);
      await this.#broker.flows.updateFlow(step.record, found.revision);
    }
    return step;
  }

  /**
   * How a node's job looks now. A submit still under way past its commit
   * deadline and the reaper's grace died (its submitter checks that deadline
   * before it commits, and would have rolled back by then): it is finished
   * here, as the reaper would finish it (rolled forward if it committed,
   * else rolled back), then read again. The reaper runs only on a runtime
   * with the admin role; without this, a flow whose driver died inside a
   * node's submit waited for one, for ever if there was none. A node whose
   * submit was rolled back is submitted again by the step (a submit takes
   * over a rolled-back record of its key).
   *
   * In a cancelled flow (`flowCancelled`) the deadline is not waited for
   * once the submit's lease has run out: its submitter's runtime stopped
   * renewing it (it died), the proof a takeover acts on. A cancel waited
   * for the deadline and the grace, 40 s, before it resolved (review
   * finding). A submit whose lease is still renewed, or not written yet, is
   * alive: its commit (or its own rollback) wakes the flow.
   *
   * A submit rolled back here loses its lease too, as the reaper's pass
   * removes it: left, it kept the rolled-back job in the leases bucket (the
   * index of the jobs not over: the dashboard listed it, each HTTP listing
   * read its record) until a takeover pass of a supervisor removed it, for
   * ever without one. Only the lease read before the rollback and run out
   * then (its holder's heartbeat too), up to that revision: a lease another
   * runtime holds or took since (a resubmit of the key) stays.
   */
  async #observeJob(jobId: string, flowCancelled: boolean): Promise<ObservedJob> {
    const shown = (await shownRecord(this.#broker, jobId))?.record;
    if (shown?.phase !== SubmitPhase.submitting) return observe(shown);
    const now = () => this.#core.clock.now();
    const graceMs = this.#core.options.jobs.reapGraceMs;
    const pastDeadline = now() >= shown.commitDeadline + graceMs;
    if (!pastDeadline && !flowCancelled) return observe(shown);
    const lease = await this.#broker.leases.get(jobId);
    const runOut = lease !== undefined && lease.lease.until <= now();
    if (!pastDeadline && !runOut) return observe(shown);
    // Not past its deadline: finished whatever the deadline says (its submitter is gone).
    const finished = await reapSubmits(this.#broker, now, pastDeadline ? graceMs : anyDeadline, [shown]);
    if (finished.rolledBack.length > 0) {
      if (runOut)
        await this.#broker.leases
          .remove(jobId, lease.revision)
          .catch((error: unknown) =>
            this.#log.debug(
              { jobId, err: error },
              "lease of a rolled-back submit not removed; a takeover pass does",
            ),
          );
      this.#log.info(
        { jobId },
        flowCancelled
          ? "a node's submit that died before its commit was rolled back; its flow was cancelled"
          : "a node's submit that died before its commit was rolled back; submitted again",
      );
    }
    return observe((await shownRecord(this.#broker, jobId))?.record);
  }

  /**
   * The jobs of a cancelled flow's nodes that run though the cancel wrote
   * them cancelled: their submit landed after it, and the driver that made
   * it stopped before it cancelled them. A flow woken by such a job's
   * record (every runtime is) cancels it here. A submit still under way is
   * left to the next wake (its commit's). Only the nodes that were being
   * submitted at the cancel are read (a few): a wake of a big cancelled
   * flow, one per job it cancels, does not read every node's job.
   */
  async #landedAfterCancel(record: FlowRecord): Promise<string[]> {
    if (record.status !== "cancelled") return [];
    // 32 at once: a cancel that stopped its driver's submits leaves hundreds of such nodes.
    const running = await inBatches(Object.values(record.nodes), async (node) => {
      // Only a node cancelled while its job was being submitted may have one landing after.
      if (node.status !== "cancelled" || node.reason !== cancelledInSubmit) return undefined;
      const seen = await this.#observeJob(node.jobId, true);
      return seen.kind === "running" ? node.jobId : undefined;
    });
    return running.filter((id): id is string => id !== undefined);
  }

  /**
   * Steps every flow marked not settled. A mark whose flow settled (its
   * driver died between the two writes) goes; one without a record (its
   * submitter died before writing it) goes once older than `orphanMarkMs`,
   * and only up to the revision read: the submitter marks again after its
   * record is written, so a slow submit keeps its mark.
   */
  async #sweep(): Promise<void> {
    for (const mark of await this.#broker.flows.listLive()) {
      let found: Awaited<ReturnType<Broker["flows"]["getFlow"]>>;
      try {
        found = await this.#broker.flows.getFlow(mark.id);
      } catch (error) {
        // One flow it cannot read (a newer version's, one edited by hand) is left as it is: the
        // flows marked after it are still swept. Said once, not every sweep.
        this.#unreadable(mark.id, error);
        continue;
      }
      try {
        if (found && !isSettled(found.record)) await this.wake(mark.id);
        else if (found) await this.#broker.flows.unmarkLive(mark.id);
        else if (this.#core.clock.now() - mark.markedAt > orphanMarkMs)
          await this.#broker.flows.unmarkLive(mark.id, mark.revision);
      } catch (error) {
        // One flow not stepped or unmarked now (a write refused, the server away) keeps none of
        // the flows marked after it from being swept: it is swept again at the next pass.
        this.#log.warn({ flowId: mark.id, err: error }, "flow not swept now; swept again at the next pass");
      }
    }
  }

  /** Flows whose record the sweep could not read, each told once. */
  readonly #firstTold = firstTime();

  #unreadable(flowId: string, error: unknown): void {
    if (!this.#firstTold(flowId)) return;
    this.#log.error({ flowId, err: error }, "flow record unreadable; the sweep leaves it and goes on");
  }

  /** Waits for the steps running here (the runtime stops). */
  async stop(): Promise<void> {
    await Promise.allSettled([...this.#stepping.values()].map((entry) => entry.done));
  }
}
