import { Cause, Effect, Exit } from "effect";
import type { Broker } from "../adapters/broker.ts";
import { retryWith } from "../effects/retry.ts";
import { aheadOfServerRead } from "../kernel/clock.ts";
import { RevisionConflict, RuntimeStopped } from "../kernel/errors.ts";
import { firstTime } from "../kernel/first-time.ts";
import {
  type FlowRecord,
  flowNodeOfKey,
  isSettled,
  type ObservedJob,
  stepFlow,
} from "../kernel/flow-record.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import { boundReason } from "../kernel/reason.ts";
import {
  everyLook,
  type Look,
  type Looks,
  landedAfterCancel,
  type Observer,
  observeChange,
  observeJob,
  withLook,
} from "./flow-observe.ts";
import { cancelJobs, type FlowActs, submitNodes } from "./flow-submits.ts";
import { orphanMarkMs } from "./flow-write.ts";
import type { Jobs } from "./jobs-face.ts";
import type { RecordListener } from "./record-feed.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/** How often a driver looks at every flow not settled: what a flow whose driver died waits at most. */
const flowSweepMs = 2000;

/**
 * How often a driver reads the job of every node of a flow not settled
 * (the sweep's other passes read only the nodes being submitted): a backstop
 * for a node's change it may have missed without knowing it.
 */
const everyNodeMs = 30_000;

/** Listens to the runtime's record watch (its changes, and each time it is placed); returns the unlisten. */
export type RecordChanges = (listener: RecordListener) => () => void;

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

/**
 * Drives flows: steps a flow (`stepFlow`) from its record and its nodes' job
 * records, writes the record (compare-and-set; a conflict re-reads and steps
 * again), then submits and cancels what the step says. Stateless (what it
 * holds only says what to read): every runtime with the submitter role runs
 * one, woken by the job records of flow nodes as they change (their
 * idempotency key names the flow and node) and by a sweep of every flow not
 * settled, so a flow whose driver died is finished by another within
 * `flowSweepMs`. Drivers racing on one flow do the same step: a node's job
 * is one job by its key.
 *
 * What a step reads grows with the changes, not with the flow: a step woken
 * by a node's change looks at that node alone, from the record the change
 * carried (no read); the changes heard during a step are one step after it.
 * The job of every node not ended is read at a flow's first sweep here, after
 * the watch is placed again (changes may have been missed), after a step
 * that failed, and every `everyNodeMs`; the other sweeps read only the nodes
 * being submitted, whose submit may have died with no change to come. A
 * step asked for otherwise (a submit, a `get`, a cancel) reads every node.
 */
export class FlowDriver {
  readonly #core: RuntimeCore;
  readonly #broker: Broker;
  readonly #log: Logger;
  /** One step at a time per flow here; a wake during a step runs one more after it. */
  readonly #stepping = new Map<string, { done: Promise<void> }>();
  /** What the next step of each flow looks at: the wakes since its last step, together. */
  readonly #looks = new Map<string, Looks>();
  /** When each flow's job of every node was last read here (a step that looked at `every`). */
  readonly #everyRead = new Map<string, number>();
  /** Flows whose next sweep reads every node: a change heard may be lost (its step failed, or came too soon). */
  readonly #owed = new Set<string>();
  /** The record watch's placements so far: a full pass counts only if none came while it read. */
  #placements = 0;
  readonly #observer: Observer;
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
    this.#observer = {
      broker,
      log: this.#log,
      now: () => core.clock.now(),
      graceMs: core.options.jobs.reapGraceMs,
      // The server's clock as this runtime's leases last read it (a reaper's or takeover's pass).
      aheadMs: () => aheadOfServerRead(core.clock, broker.leases.serverTime()),
    };
  }

  /** Starts the wake-ups and the sweep, on a runtime that may drive flows. */
  start(): void {
    // Stepping a flow submits its jobs: the submitter's calls and NATS grants (a supervisor's
    // grants cannot publish tasks). Every runtime that may submit drives flows.
    if (!this.#core.options.roles.has("submitter")) return;
    // The runtime's one record watch (the job registry's): no watch of its own. A change
    // wakes its flow to look at that node alone, from the record the change carries.
    const unwatch = this.#watch({
      onRecord: (record) => {
        const node = flowNodeOfKey(record.idempotencyKey);
        if (node) void this.wake(node.flowId, { name: node.name, record });
      },
      // Placed again (a reconnect): changes meanwhile were not heard, so every flow's next
      // sweep reads every node (the first placement: flows this runtime has not read yet do).
      onPlaced: () => {
        this.#placements++;
        this.#everyRead.clear();
      },
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

  /**
   * Steps the flow soon (at once, or after the step running here), looking
   * at the job of every node not ended (`every`, the default), of those
   * being submitted, or of the node whose change woke it. The wakes that
   * come during a step are one step after it, which looks at all they asked.
   */
  wake(flowId: string, look: Look = "every"): Promise<void> {
    this.#looks.set(flowId, withLook(this.#looks.get(flowId), look));
    const running = this.#stepping.get(flowId);
    if (running) return running.done;
    const entry = { done: Promise.resolve() };
    this.#stepping.set(flowId, entry);
    entry.done = (async () => {
      try {
        for (let next = this.#looks.get(flowId); next; next = this.#looks.get(flowId)) {
          this.#looks.delete(flowId);
          if (this.#core.stopping.aborted) return;
          await this.step(flowId, next).catch((error: unknown) => {
            // What it looked at is not looked at again by a wake: the next sweep reads every node.
            this.#owed.add(flowId);
            if (this.#core.stopping.aborted) return;
            this.#log.warn({ flowId, err: error }, "flow step failed; the next wake or sweep steps it again");
          });
        }
      } finally {
        this.#stepping.delete(flowId);
      }
    })();
    return entry.done;
  }

  /** The hook, if any, at a write; throwing there stops the step as a crash would. */
  point(point: FlowStepPoint, flowId: string, node?: string): void {
    this.hook?.(point, flowId, node);
  }

  /** One step of the flow: read, decide, write, then submit and cancel. */
  async step(flowId: string, looks: Looks = everyLook()): Promise<FlowRecord | undefined> {
    const startedAt = this.#core.clock.now();
    const placements = this.#placements;
    const decided = await onConflictAgain(() => this.#decide(flowId, looks), this.#core.stopping);
    if (!decided) return undefined;
    const { record, submit, cancel } = decided;
    this.seen(record);
    // A full pass that read before the watch was placed again may have missed a change made
    // before the placement, which the watch does not hand over: it is owed again. Counted as
    // read, it undid the placement's clear, and a node's end went unheard until the 30 s pass (a
    // review, flows-placement-race.test.ts).
    if (looks.every && placements === this.#placements) {
      this.#everyRead.set(flowId, startedAt);
      this.#owed.delete(flowId);
    } else if (looks.every) this.#owed.add(flowId);
    // Settled: nothing will happen to it any more, so the sweep need not read it again.
    if (isSettled(record)) {
      this.#forget(flowId);
      await this.#broker.flows.unmarkLive(flowId);
    }
    const { tried, refused, failed } = await submitNodes(this.#acts, record, submit);
    try {
      if (failed !== undefined) throw failed;
      await this.#afterSubmits(flowId, refused, cancel);
    } finally {
      // Whatever failed above: the jobs this step made are its to cancel if the flow was.
      if (tried.length > 0) await this.#cancelMadeIfCancelled(flowId, record, tried, refused);
    }
    return record;
  }

  /** The nodes refused for good written failed; the jobs the step decided to cancel, cancelled. */
  async #afterSubmits(
    flowId: string,
    refused: ReadonlyMap<string, string>,
    cancel: readonly string[],
  ): Promise<void> {
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
  }

  /**
   * A cancel may have landed while this step submitted (`tried`). Its step found no job for a
   * node still being submitted here, wrote it cancelled and may have settled the flow, which
   * no step looks at again: the jobs this step made are cancelled by it. Also when a submit of
   * the batch failed: the step threw before it looked, and a job of that batch ran for good (a
   * review, flows-cancel-batch-throws.both.test.ts).
   */
  async #cancelMadeIfCancelled(
    flowId: string,
    record: FlowRecord,
    tried: readonly string[],
    refused: ReadonlyMap<string, string>,
  ): Promise<void> {
    const now = await this.#broker.flows.getFlow(flowId);
    if (now?.record.status !== "cancelled") return;
    const made = tried.filter((name) => !refused.has(name));
    const nodeOf = new Map(
      made.map((name) => [(record.nodes[name] as FlowRecord["nodes"][string]).jobId, name]),
    );
    await cancelJobs(this.#acts, flowId, [...nodeOf.keys()], (jobId) => nodeOf.get(jobId));
    // A cancel not stepped yet: the next step cancels the flow's other running jobs.
    void this.wake(flowId);
  }

  /**
   * Reads the record and the jobs of the nodes `looks` names (of a change,
   * from the record it carried), steps it, writes it. A node not looked at
   * is left as the record says: its change wakes a step of its own.
   */
  async #decide(
    flowId: string,
    looks: Looks,
  ): Promise<{ record: FlowRecord; submit: readonly string[]; cancel: readonly string[] } | undefined> {
    const found = await this.#broker.flows.getFlow(flowId);
    if (!found) return undefined;
    const o = this.#observer;
    if (isSettled(found.record))
      return {
        record: found.record,
        submit: [],
        cancel: await landedAfterCancel(o, found.record, looks.every ? undefined : looks.changed),
      };
    const cancelled = found.record.status === "cancelled";
    const observed = new Map<string, ObservedJob>();
    await Promise.all(
      Object.entries(found.record.nodes).map(async ([name, node]) => {
        const change = looks.changed.get(name);
        // A job changed while its node waits: the record read is behind the one its submit
        // followed (a replica not caught up). Not lost: the next sweep reads every node.
        if (change && node.status === "waiting") this.#owed.add(flowId);
        if (node.status !== "submitting" && node.status !== "running") return;
        // A lane job whose commit is not written yet is running; a submit under way, pending.
        if (looks.every || looks.running || (looks.submitting && node.status === "submitting"))
          observed.set(name, await observeJob(o, node.jobId, cancelled));
        else if (change) observed.set(name, await observeChange(o, node.jobId, change, cancelled));
      }),
    );
    const step = stepFlow(found.record, (name) => observed.get(name), this.#core.clock.now());
    if (step.record !== found.record) {
      this.point("update", flowId);
      await this.#broker.flows.updateFlow(step.record, found.revision);
    }
    // Cancelled and not settled yet (a node's submit still pending): a job that landed after the
    // cancel wrote its node cancelled is one to cancel too. Its change was passed over, the node
    // ended, and the step settling the flow did not look: it ran for good (a review,
    // flows-cancel-batch-throws.both.test.ts).
    const landed = cancelled
      ? await landedAfterCancel(o, found.record, looks.every ? undefined : looks.changed)
      : [];
    return landed.length === 0 ? step : { ...step, cancel: [...step.cancel, ...landed] };
  }

  /**
   * Steps every flow marked not settled (reading the jobs of its nodes being
   * submitted, or of every node not ended when due). A mark whose flow settled (its
   * driver died between the two writes) goes; one without a record (its
   * submitter died before writing it) goes once older than `orphanMarkMs`,
   * and only up to the revision read: the submitter marks again after its
   * record is written, so a slow submit keeps its mark.
   */
  async #sweep(): Promise<void> {
    const marks = await this.#broker.flows.listLive();
    // A flow settled and unmarked by another runtime: what this one held of it goes too.
    const marked = new Set(marks.map((mark) => mark.id));
    for (const id of [...this.#everyRead.keys(), ...this.#owed]) if (!marked.has(id)) this.#forget(id);
    for (const mark of marks) {
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
        const readAt = this.#everyRead.get(mark.id);
        const every =
          this.#owed.has(mark.id) || readAt === undefined || this.#core.clock.now() - readAt >= everyNodeMs;
        // A cancelled flow not settled: its running jobs are to be cancelled, and a canceller that
        // died after its write leaves no change of theirs to wake a step (a review,
        // flows-cancel-takeover.both.test.ts): each sweep reads its nodes running and being
        // submitted. Not every node: the jobs of hundreds of nodes written cancelled in their
        // submit, read at each sweep, were ~170 reads every 2 s (a review,
        // flows-cancel-unsettled-reads.test.ts).
        const cancelled = found?.record.status === "cancelled";
        if (found && !isSettled(found.record))
          await this.wake(mark.id, every ? "every" : cancelled ? "running" : "submitting");
        else if (found) {
          this.#forget(mark.id);
          await this.#broker.flows.unmarkLive(mark.id);
        } else if (this.#core.clock.now() - mark.markedAt > orphanMarkMs)
          await this.#broker.flows.unmarkLive(mark.id, mark.revision);
      } catch (error) {
        // One flow not stepped or unmarked now (a write refused, the server away) keeps none of
        // the flows marked after it from being swept: it is swept again at the next pass.
        this.#log.warn({ flowId: mark.id, err: error }, "flow not swept now; swept again at the next pass");
      }
    }
  }

  /** A settled flow: nothing more to look at. */
  #forget(flowId: string): void {
    this.#everyRead.delete(flowId);
    this.#owed.delete(flowId);
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

/** A step that looks at the job of every node not ended. */
