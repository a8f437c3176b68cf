import type { Actor, AnyActorRef, InspectionEvent } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import type { DashboardJob } from "../adapters/http/dashboard-app.ts";
import type { Emit } from "../adapters/http/dashboard-stream.ts";
import { shownRecord } from "../effects/finalize-job.ts";
import type { JobEvent } from "../kernel/job-event.ts";
import { isFinal, type JobRecord, type JobStatus, maxCounts, priorityOf } from "../kernel/job-record.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import { type JobStateValue, jobStatusOf } from "../machines/job-state.ts";
import type { JobSnapshot } from "./job-handle.ts";
import type { JobRegistry } from "./jobs.ts";
import { leasedRecords } from "./leased-records.ts";
import type { Runtime } from "./runtime.ts";

/**
 * What the dashboard's event streams send (docs/architecture.md, "The
 * dashboard"). A job's chart is lit from its actor when this runtime has
 * one (the full state value, every transition with the event that took it),
 * else from its record's changes (the status only: another runtime's actor
 * is not visible from here).
 */

/** Progress updates of a live actor, at most this many a second (the end always goes). */
const progressPerSecond = 10;
/** How often a job's stream without an actor looks for one this runtime started since (a map lookup). */
const lookForActorMs = 100;

/**
 * A job as last seen, with this runtime's live counts, rate and ETA when it watches it (never
 * below what was seen), and its live status unless what was seen is its end: a watching actor
 * shows no end before it has recorded it (`shownSnapshot`), and may not have heard yet of the
 * end just read.
 */
export const withLive = (job: DashboardJob, live: JobSnapshot | undefined): DashboardJob =>
  live === undefined
    ? job
    : {
        ...job,
        ...(isFinal(job.status) ? {} : { status: live.status }),
        ...maxCounts(job, live),
        throughput: live.throughput,
        etaMs: live.etaMs,
        live: true,
      };

export const jobFromRecord = (record: JobRecord, live: JobSnapshot | undefined): DashboardJob =>
  withLive(
    {
      id: record.id,
      queue: record.queue,
      status: record.status,
      total: record.total,
      done: record.counts.done,
      failed: record.counts.failed,
      dead: record.counts.dead,
      throughput: null,
      etaMs: null,
      reason: record.reason ?? null,
      createdAt: record.createdAt,
      updatedAt: record.updatedAt,
      priority: priorityOf(record.settings),
      live: false,
    },
    live,
  );

const progressOfActor = (s: JobSnapshot) => ({
  id: s.id,
  queue: s.queue,
  status: s.status,
  total: s.total,
  done: s.done,
  failed: s.failed,
  dead: s.dead,
  throughput: s.throughput,
  etaMs: s.etaMs,
  reason: s.reason,
  live: true,
});

const progressOfEvent = (e: JobEvent): Omit<DashboardJob, "createdAt"> => ({
  id: e.jobId,
  queue: e.queue,
  status: e.status,
  total: e.total,
  done: e.counts.done,
  failed: e.counts.failed,
  dead: e.counts.dead,
  throughput: null,
  etaMs: null,
  reason: e.reason ?? null,
  updatedAt: e.at,
  live: false,
});

/** Calls `listener` with each event an actor processes and the snapshot it left (XState's inspection). */
const inspectActor = (
  actor: AnyActorRef,
  listener: (eventType: string, value: unknown) => void,
): (() => void) => {
  const sub = actor.system.inspect((ev: InspectionEvent) => {
    if (ev.type !== "@xstate.snapshot" || ev.actorRef !== actor) return;
    listener(ev.event.type, (ev.snapshot as { value?: unknown }).value);
  });
  return () => sub.unsubscribe();
};

/**
 * One job's stream: `transition` events (`source` actor or record, the
 * event's type, the new state value) each time the state changes, and
 * `progress` events (counts, rate, ETA). Record changes are watched first
 * (`ready`), then the state read, so no change falls between the two.
 */
export const streamJob = async (
  rt: Runtime,
  registry: JobRegistry,
  broker: Broker,
  job: DashboardJob,
  emit: Emit,
  signal: AbortSignal,
): Promise<void> => {
  const events = rt.jobs.events({ queue: job.queue, signal });
  await events.ready;
  /** The state value last sent: the actor's, or a record's status. */
  let last: JobStateValue | JobStatus | undefined;
  const transition = (source: "actor" | "record", event: string | null, value: JobStateValue | JobStatus) => {
    if (JSON.stringify(value) === JSON.stringify(last)) return;
    // The record trails the actor: its status says no more than the actor's state already did.
    if (source === "record" && last !== undefined && jobStatusOf(last) === value) return;
    last = value;
    emit("transition", { source, event, value, at: Date.now() });
  };

  let attached: Actor<JobMachine> | undefined;
  let detach = () => {};
  /** Follows this runtime's actor of the job, if it has one now; true if it does. */
  const attach = (): boolean => {
    const actor = registry.watchedActor(job.id);
    if (!actor) return false;
    if (actor === attached) return true;
    detach();
    attached = actor;
    transition("actor", null, actor.getSnapshot().value);
    let sentAt = 0;
    let timer: NodeJS.Timeout | undefined;
    const progress = () => {
      clearTimeout(timer);
      timer = undefined;
      sentAt = Date.now();
      // As the job's handles show it: no end before its record says it (the chart's state value
      // does show `recording`). An actor stopped meanwhile shows nothing; the record's events do.
      const shown = registry.watchedSnapshot(job.id);
      if (shown) emit("progress", progressOfActor(shown));
    };
    const stopInspecting = inspectActor(actor, (eventType, value) => {
      const before = last;
      transition("actor", eventType, value as JobStateValue); // the job actor's, as inspected
      if (last !== before) return progress();
      const wait = 1000 / progressPerSecond - (Date.now() - sentAt);
      if (wait <= 0) progress();
      else timer ??= setTimeout(progress, wait);
    });
    // Ended (its end recorded, or stopped): the next record change looks for an actor again.
    const sub = actor.subscribe({ complete: () => detach(), error: () => detach() });
    detach = () => {
      stopInspecting();
      sub.unsubscribe();
      if (timer) progress();
      attached = undefined;
      detach = () => {};
    };
    progress();
    return true;
  };

  // An actor that starts here later (a redrive, a takeover, a `get`) is found within this,
  // not only at the job's next record change, which may come after its first transitions.
  const looking = setInterval(() => {
    if (!attached) attach();
  }, lookForActorMs);
  try {
    if (!attach()) {
      const found = await shownRecord(broker, job.id);
      if (found) {
        transition("record", null, found.record.status);
        emit("progress", jobFromRecord(found.record, undefined));
      }
    }
    for await (const event of events) {
      if (event.jobId !== job.id) continue;
      const shown = attach() ? registry.watchedSnapshot(job.id) : undefined;
      if (shown) emit("progress", progressOfActor(shown));
      else {
        transition("record", event.type, event.status);
        emit("progress", progressOfEvent(event));
      }
    }
  } finally {
    clearInterval(looking);
    detach();
  }
};

/**
 * The overview's stream: `job` for each job event of a queue the token
 * sees (with this runtime's live rate and ETA when it watches the job), and
 * `connection` for each transition of the runtime's connection actor.
 */
export const streamOverview = async (
  rt: Runtime,
  registry: JobRegistry,
  connection: AnyActorRef,
  visible: (queue: string) => boolean,
  emit: Emit,
  signal: AbortSignal,
): Promise<void> => {
  let last = JSON.stringify(connection.getSnapshot().value);
  const stopInspecting = inspectActor(connection, (eventType, value) => {
    const key = JSON.stringify(value);
    if (key === last) return;
    last = key;
    emit("connection", { state: rt.connection.state, value, event: eventType });
  });
  try {
    for await (const event of rt.jobs.events({ signal })) {
      if (!visible(event.queue)) continue;
      const live = registry.watchedSnapshot(event.jobId);
      const seen = progressOfEvent(event);
      // The end the event says stands (as in `withLive`): the actor may not have recorded it yet.
      const over = isFinal(seen.status) ? { status: seen.status, reason: seen.reason } : {};
      emit("job", live ? { ...seen, ...progressOfActor(live), ...over } : seen);
    }
  } finally {
    stopInspecting();
  }
};

/**
 * The jobs the dashboard lists: those not over (one supervision lease each)
 * and the last `keep` it saw end since it was created, not every record
 * kept: an older ended job is dropped as the next one ends, whether or not
 * a page asks. Each is kept as last seen, from its own `rt.jobs.events()`
 * reader (ended by `stop()`); a job is read from the server only when first
 * met (a job not over that changed nothing since the dashboard started), so
 * a refresh costs one read of the leases, not one read per job. An event
 * always wins over a read: the watch delivers every revision in order (or,
 * behind, the latest), so the last event seen is never older than what a
 * read racing it returned.
 */
export const jobBook = (rt: Runtime, broker: Broker, keep = 100) => {
  const known = new Map<string, DashboardJob>();
  const ended = new Set<string>();
  const reading = new AbortController();
  const done = (async () => {
    for await (const event of rt.jobs.events({ signal: reading.signal })) {
      const before = known.get(event.jobId);
      known.set(event.jobId, {
        ...progressOfEvent(event),
        createdAt: before?.createdAt ?? event.at,
        ...(before?.priority === undefined ? {} : { priority: before.priority }),
      });
      ended.delete(event.jobId);
      if (event.status === "succeeded" || event.status === "failed") ended.add(event.jobId);
      for (const oldest of ended) {
        if (ended.size <= keep) break;
        ended.delete(oldest);
        known.delete(oldest);
      }
    }
  })().catch((error: unknown) => rt.logger.warn({ err: error }, "dashboard's job events ended"));
  // A record that cannot be read is not listed (read again at the next refresh); the others are.
  const records = leasedRecords(broker, rt.logger, "it is not listed on the dashboard");
  const listed = async (): Promise<DashboardJob[]> => {
    const leased = new Set((await broker.leases.list()).map((l) => l.jobId));
    records.leased(leased);
    for (const record of await records.read([...leased].filter((id) => !known.has(id))))
      if (!known.has(record.id)) known.set(record.id, jobFromRecord(record, undefined));
    for (const id of known.keys()) if (!leased.has(id) && !ended.has(id)) known.delete(id);
    return [...known.values()];
  };
  return {
    listed,
    /** The jobs kept now, and how many of them ended: for tests. */
    size: () => ({ all: known.size, ended: ended.size }),
    /** The job as kept now: for tests. */
    seen: (id: string): DashboardJob | undefined => known.get(id),
    /** Ends the events reader (its consumer on NATS); resolves when it has. */
    stop: async (): Promise<void> => {
      reading.abort();
      await done;
    },
  };
};
