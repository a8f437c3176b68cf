import { type Actor, createActor, fromPromise, waitFor } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import { IdempotencyConflict, InvalidArgument, RuntimeStopped } from "../kernel/errors.ts";
import {
  allNodesEnded,
  type FlowNode,
  type FlowRecord,
  type FlowStatus,
  flowNodeOfKey,
  isSettled,
} from "../kernel/flow-record.ts";
import type { JobStatus } from "../kernel/job-record.ts";
import { boundReason } from "../kernel/reason.ts";
import { check, SubjectToken } from "../kernel/validation.ts";
import { type FlowMachine, type FlowNodeView, flowMachine } from "../machines/flow.machine.ts";
import { FlowDriver, onConflictAgain, type RecordChanges } from "./flow-driver.ts";
import { type FlowRequest, isSameFlow, planFlow } from "./flow-plan.ts";
import { afterFailedCreate, flowUnderId } from "./flow-write.ts";
import type { TaskResult } from "./job-handle.ts";
import type { Jobs } from "./jobs-face.ts";
import { requireRole } from "./permissions.ts";
import type { RuntimeCore } from "./runtime-core.ts";

export type { FlowJobRequest, FlowPolicy, FlowRequest } from "./flow-plan.ts";

export interface FlowSnapshot {
  readonly id: string;
  /** `running` until every job of the flow ended; then `succeeded`, `failed` or `cancelled`. */
  readonly status: FlowStatus;
  readonly reason?: string;
  /** Each job of the flow: its job id (its job exists once its status is past `waiting`), status and reason. */
  readonly nodes: Readonly<Record<string, FlowNodeView>>;
}

export interface FlowHandle {
  readonly id: string;
  snapshot(): FlowSnapshot;
  /**
   * Resolves once the flow ended (it does not reject for a failed flow);
   * rejects with `RuntimeStopped` if the runtime stops first.
   */
  done(): Promise<FlowSnapshot>;
  /**
   * Cancels the flow: its running jobs are cancelled, its waiting ones never
   * submitted. `InvalidArgument` for a reason that is no string;
   * `RuntimeStopped` once the runtime stopped. The record keeps the reason
   * cut to 256 bytes (`… [cut from N characters]`).
   */
  cancel(reason?: string): Promise<FlowSnapshot>;
}

/** A dependency of a flow's job as its handler sees it: its job, end and results. */
export interface FlowDependency<Result = unknown> {
  readonly jobId: string;
  readonly status: JobStatus | "skipped" | "cancelled";
  readonly results: ReadonlyArray<TaskResult<Result>>;
}

/** `rt.flows`: jobs of jobs. */
export interface Flows {
  /**
   * Validates the whole flow, writes its record (the commit point), then
   * submits the jobs that depend on none; the rest are submitted as their
   * dependencies end, by any runtime with the submitter role.
   * @example
   * const flow = await rt.flows.submit({ parent: { queue: "sum", tasks: [{}] }, children: [{ queue: "count", tasks: [1, 2] }] });
   * log.info({ status: (await flow.done()).status }, "flow ended");
   */
  submit(request: FlowRequest): Promise<FlowHandle>;
  /** The flow with this id, watched from now on; undefined if unknown. */
  get(id: string): Promise<FlowHandle | undefined>;
  /**
   * For a handler of a flow's job (`task.jobId`): each job it depends on, by
   * name, with its results. `{}` for a job that is no flow's or has no dependencies.
   * @example
   * const inputs = await rt.flows.dependencies(task.jobId);
   * const total = Object.values(inputs).flatMap((d) => d.results).reduce((n, r) => n + (r.ok ? Number(r.result) : 0), 0);
   */
  dependencies<Result = unknown>(jobId: string): Promise<Record<string, FlowDependency<Result>>>;
}

/** How often a watched flow's record is read, for changes another runtime wrote. */
const watchMs = 250;

/** Each handle's actor, kept off the public type (tests and the model replay reach it). */
const actors = new WeakMap<FlowHandle, Actor<FlowMachine>>();
/** Handles given to a caller (`get`, a resubmit): a submit's actor outlives its failed write only for one. */
const givenOut = new WeakSet<FlowHandle>();
export const flowActorOf = (handle: FlowHandle): Actor<FlowMachine> => {
  const actor = actors.get(handle);
  if (!actor)
    throw new InvalidArgument({
      field: "handle",
      message: "handle: must be a flow handle made by a runtime",
    });
  return actor;
};

export class FlowRegistry {
  readonly #core: RuntimeCore;
  readonly #broker: Broker;
  readonly #jobs: Jobs;
  readonly driver: FlowDriver;
  readonly #handles = new Map<string, FlowHandle>();

  constructor(core: RuntimeCore, broker: Broker, jobs: Jobs, watch: RecordChanges) {
    this.#core = core;
    this.#broker = broker;
    this.#jobs = jobs;
    this.driver = new FlowDriver(core, broker, jobs, watch);
    this.driver.start();
  }

  async submit(request: FlowRequest): Promise<FlowHandle> {
    requireRole(this.#core.options.roles, "submitter", "rt.flows.submit()");
    const { record, checkSize } = await planFlow(request, this.#broker, this.#core.clock);
    const existing = await this.#broker.flows.getFlow(record.id);
    if (existing) {
      const handle = this.#same(existing.record, record);
      if (!isSettled(existing.record)) void this.driver.wake(record.id);
      return handle;
    }
    checkSize();
    let writeError: unknown;
    // Told once this submit's outcome is unknown (its rejection) while its actor goes on looking.
    let unknownOutcome = () => {};
    const toldUnknown = new Promise<void>((resolve) => {
      unknownOutcome = resolve;
    });
    const { handle, actor, drop } = this.#watch(record.id, undefined, async () => {
      let made = record;
      try {
        this.driver.point("record", record.id);
        // The mark first: a record is never without it, so the sweep finds every flow not settled.
        await this.#broker.flows.markLive(record.id, record.createdAt);
        await this.#broker.flows.createFlow(record);
      } catch (error) {
        const after = await afterFailedCreate(this.#broker.flows, record, error);
        if ("failed" in after) {
          writeError = after.failed;
          throw writeError;
        }
        if ("unknown" in after) {
          // The submit rejects (the flow may have been made); a handle given out follows the flow
          // under the id once read, failing as the submit did if none is by `orphanMarkMs`.
          writeError = after.unknown;
          if (!givenOut.has(handle)) throw writeError;
          unknownOutcome();
          const found = await flowUnderId(this.#broker.flows, record, this.#core, watchMs);
          if (!found) throw writeError;
          if (!isSettled(found)) void this.driver.wake(record.id);
          return found;
        }
        if ("other" in after) {
          // This submit is refused, and a handle `get` gave out meanwhile follows the flow under
          // the id: it said failed, while that flow ran to its own end (review finding).
          writeError = this.#conflict(after.other);
          return after.other;
        }
        made = after.made;
      }
      // Again after the record: a sweep that took the first mark for an orphan cannot remove this
      // one. The flow is made whatever this write says: its driver here steps it at once, and a
      // flow left unmarked is one no sweep finds should this runtime die (said at warn).
      await this.#broker.flows
        .markLive(record.id, this.#core.clock.now())
        .catch((error: unknown) =>
          this.#core.logger.warn({ flowId: record.id, err: error }, "flow not marked again after its record"),
        );
      return made;
    });
    // The runtime stopped under the write (its actor stopped): the write goes on, and may land.
    let stoppedUnder = false;
    await Promise.race([
      waitFor(actor, (s) => !s.matches("checking") && !s.matches("submitting")),
      toldUnknown,
    ]).catch((error: unknown) => {
      if (!this.#core.stopping.aborted) throw error;
      stoppedUnder = true;
    });
    if (writeError !== undefined) {
      // A handle given out follows the flow under the id (another's that won, stepped here too
      // until it ended; or this one's, once read). With none given out nobody reads the actor:
      // kept, it read the flow's record every 250 ms for that flow's whole life (a review).
      if (givenOut.has(handle) && actor.getSnapshot().status === "active") {
        if (writeError instanceof IdempotencyConflict) void this.driver.wake(record.id);
      } else drop();
      throw writeError;
    }
    if (stoppedUnder)
      throw new RuntimeStopped({
        message: `runtime stopped while flow ${record.id} was submitted: it may have been made (rt.flows.get("${record.id}") on another runtime says)`,
      });
    await this.driver.wake(record.id);
    return handle;
  }

  async get(id: string): Promise<FlowHandle | undefined> {
    requireRole(this.#core.options.roles, "submitter", "rt.flows.get()");
    check(SubjectToken, id, "id");
    const local = this.#handles.get(id);
    if (local) {
      givenOut.add(local);
      return local;
    }
    const found = await this.#broker.flows.getFlow(id);
    if (!found) return undefined;
    const { handle } = this.#watch(id, found.record);
    givenOut.add(handle);
    if (!isSettled(found.record)) void this.driver.wake(id);
    return handle;
  }

  async dependencies<Result>(jobId: string): Promise<Record<string, FlowDependency<Result>>> {
    requireRole(this.#core.options.roles, "submitter", "rt.flows.dependencies()");
    check(SubjectToken, jobId, "jobId");
    const node = flowNodeOfKey((await this.#jobs.record(jobId))?.idempotencyKey);
    if (!node) return {};
    const flow = (await this.#broker.flows.getFlow(node.flowId))?.record;
    const deps = flow?.nodes[node.name]?.dependsOn ?? [];
    const entries = await Promise.all(
      deps.map(async (name) => {
        const dep = flow?.nodes[name] as FlowNode;
        const job =
          dep.status === "skipped" || dep.status === "cancelled"
            ? undefined
            : await this.#jobs.get<Result>(dep.jobId);
        const results: TaskResult<Result>[] = [];
        if (job) for await (const result of job.results()) results.push(result);
        const status = job ? (job.snapshot().status as JobStatus) : (dep.status as "skipped" | "cancelled");
        return [name, { jobId: dep.jobId, status, results }] as const;
      }),
    );
    return Object.fromEntries(entries);
  }

  /** A resubmit of a stored flow: the same request gets its handle, another one is refused. */
  #same(found: FlowRecord, wanted: FlowRecord): FlowHandle {
    if (!isSameFlow(found, wanted)) throw this.#conflict(found);
    const handle = this.#handles.get(found.id) ?? this.#watch(found.id, found).handle;
    givenOut.add(handle);
    return handle;
  }

  #conflict(found: FlowRecord): IdempotencyConflict {
    return new IdempotencyConflict({
      message: `id: flow ${found.id} exists, submitted with other jobs or policy`,
      idempotencyKey: found.id,
      queue: "",
      jobId: found.id,
    });
  }

  /** A handle and its actor, following the record written here and read every `watchMs`. */
  #watch(
    id: string,
    record: FlowRecord | undefined,
    write?: () => Promise<FlowRecord>,
  ): { handle: FlowHandle; actor: Actor<FlowMachine>; drop: () => void } {
    const machine = flowMachine.provide({
      actors: {
        writeRecord: fromPromise(async () => {
          if (!write) throw new Error("no record to write");
          return write();
        }),
      },
    });
    const actor = createActor(machine, {
      id: `flow:${id}`,
      input: { flowId: id, ...(record ? { record } : {}) },
      ...(this.#core.inspect ? { inspect: this.#core.inspect.inspect } : {}),
    });
    const follow = (changed: FlowRecord) => {
      if (changed.id === id && actor.getSnapshot().status === "active")
        actor.send({ type: "flow.changed", record: changed });
    };
    const unlisten = this.driver.onRecord(follow);
    const poll = setInterval(() => {
      if (actor.getSnapshot().matches("submitting")) return;
      this.#broker.flows.getFlow(id).then(
        (found) => found && follow(found.record),
        () => undefined,
      );
    }, watchMs);
    // Stopped with the runtime, or dropped (a submit's actor no handle of which was given out).
    const drop = () => {
      end();
      actor.stop();
    };
    const end = () => {
      clearInterval(poll);
      unlisten();
      this.#core.stopping.removeEventListener("abort", drop);
      if (this.#handles.get(id) === handle) this.#handles.delete(id);
    };
    actor.subscribe({ complete: end, error: end });
    this.#core.stopping.addEventListener("abort", drop, { once: true });
    const snapshot = (): FlowSnapshot => {
      const { context } = actor.getSnapshot();
      return {
        id,
        // A cancel is written first, its jobs cancelled after: `running` until they ended.
        status: context.status === "cancelled" && !allNodesEnded(context.nodes) ? "running" : context.status,
        nodes: context.nodes,
        ...(context.reason === undefined ? {} : { reason: context.reason }),
      };
    };
    const handle: FlowHandle = {
      id,
      snapshot,
      done: () =>
        new Promise((resolve, reject) => {
          const settle = () => {
            const { status } = actor.getSnapshot();
            if (status === "done") resolve(snapshot());
            // Stopped with the runtime before the flow ended: its snapshot would say `running`,
            // which is no end. A job's done() rejects so too.
            else if (status === "stopped")
              reject(new RuntimeStopped({ message: "flow watch stopped before the flow ended" }));
            else if (status === "error") reject(actor.getSnapshot().error);
          };
          actor.subscribe({ next: settle, complete: settle });
          settle();
        }),
      cancel: async (reason = "cancelled") => {
        requireRole(this.#core.options.roles, "submitter", "flow.cancel()");
        // Checked before anything is written: a reason of another type (from JavaScript) would be
        // stored in a record that no read could decode again, and nothing would be cancelled.
        if (typeof reason !== "string")
          throw new InvalidArgument({ field: "reason", message: "reason: must be a string" });
        // A handle of a flow this runtime is still submitting (`get` hands it out): its record is
        // read once written. Read before, none was found, nothing was written, and the flow ran on.
        await untilWritten(actor);
        await onConflictAgain(async () => {
          const found = await this.#broker.flows.getFlow(id);
          if (found?.record.status !== "running") return;
          this.driver.point("update", id);
          const now = this.#core.clock.now();
          const cancelled: FlowRecord = {
            ...found.record,
            status: "cancelled",
            // As stored: this runtime's view of the flow reads as every other's.
            reason: boundReason(reason),
            updatedAt: now,
          };
          await this.#broker.flows.updateFlow(cancelled, found.revision);
          this.driver.seen(cancelled);
        }, this.#core.stopping);
        await this.driver.wake(id);
        // Its end: once the step here (or elsewhere) has cancelled its jobs and written their ends.
        return handle.done();
      },
    };
    actors.set(handle, actor);
    this.#handles.set(id, handle);
    actor.start();
    return { handle, actor, drop };
  }

  async stop(): Promise<void> {
    await this.driver.stop();
  }
}

/** `rt.flows` as users see it. */
export const flowsFace = (registry: FlowRegistry): Flows => ({
  submit: (request) => registry.submit(request),
  get: (id) => registry.get(id),
  dependencies: (jobId) => registry.dependencies(jobId),
});

/**
 * Once the flow's actor has left `submitting` (its record written, or its submit failed). One
 * stopped (its runtime stopped) says nothing more: XState tells a subscriber of a stopped actor
 * nothing, and the wait would last for good.
 */
const untilWritten = (actor: Actor<FlowMachine>): Promise<void> =>
  actor.getSnapshot().status === "active" && actor.getSnapshot().matches("submitting")
    ? new Promise((resolve) => {
        const sub = actor.subscribe({
          next: (snapshot) => {
            if (snapshot.matches("submitting")) return;
            sub.unsubscribe();
            resolve();
          },
          complete: () => resolve(),
          error: () => resolve(),
        });
      })
    : Promise.resolve();
