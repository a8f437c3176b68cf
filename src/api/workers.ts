import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import type { Broker, TaskLease } from "../adapters/broker.ts";
import { ResultBatcher } from "../effects/result-batcher.ts";
import { type JobRecord, leaseKeepEveryMs, takesTasks } from "../kernel/job-record.ts";
import { childLogger } from "../kernel/logger.ts";
import { LinkedControllers, whenAborted } from "../kernel/signals.ts";
import { FairSlots } from "../kernel/slots.ts";
import { DueWaits } from "./due-waits.ts";
import { JobEnd } from "./job-end.ts";
import { QueueGate } from "./queue-gate.ts";
import { QueueJobs } from "./queue-jobs.ts";
import type { RecordFeed } from "./record-feed.ts";
import { type ActiveJob, RunningTasks, type TaskDelivery, TaskList } from "./running-tasks.ts";
import { type RuntimeCore, unlessDown } from "./runtime-core.ts";
import { observedHandler } from "./telemetry.ts";
import { taskAdmission } from "./worker-admission.ts";
import { taskHandler } from "./worker-handle.ts";
import { laneLoop } from "./worker-lane.ts";
import { type Worker, type WorkerAgents, type WorkerOptions, workerSettings } from "./worker-options.ts";
import { announceWorker } from "./worker-presence.ts";

export type { Task, TaskContext, Worker, WorkerOptions, WorkerStats } from "./worker-options.ts";

/**
 * A worker pool on one queue: pulls from the consumers of the queue's active
 * jobs and from the queue's lane (round robin, via a FIFO of slots), runs the
 * handler, stores results in batches and acks after they are stored
 * (effects/answer-task.ts, the answer path it shares with the HTTP API).
 */
export const startWorker = <Payload, Result>(
  core: Pick<RuntimeCore, "logger" | "stopping" | "loops" | "options" | "clock" | "telemetry" | "connection">,
  broker: Broker,
  agents: WorkerAgents,
  options: WorkerOptions<Payload, Result>,
  records: RecordFeed,
): Worker => {
  const settings = workerSettings(options, agents);
  const { queue: queueName, concurrency, agentId } = settings;
  const id = `w${randomUUID().slice(0, 8)}`;
  const log = childLogger(core.logger, { actor: "worker", queue: queueName, workerId: id });
  const stopping = new AbortController();
  const pulling = AbortSignal.any([stopping.signal, core.stopping]);
  // Each job's pull loop stops with the worker through one listener of `pulling`, not an
  // `AbortSignal.any` each (kernel/signals.ts says why).
  const pulls = new LinkedControllers(pulling);
  // One listener per followed job and per handler reading its signal: many, and no leak.
  setMaxListeners(0, pulling);
  const slots = new FairSlots(concurrency);
  const jobs = new Map<string, ActiveJob>();
  const running = new RunningTasks(slots, settings.maxTaskMs, log);
  /** Aborted when stop() stops waiting: the signal of every running handler fires. */
  const giveUp = new AbortController();
  setMaxListeners(0, giveUp.signal);
  const stats = { processed: 0, failed: 0, released: 0 };
  const runHandler = observedHandler(settings.handler, queueName, core.telemetry);
  // A results message must fit the server's max payload (with its message id header), whatever
  // that is: known before the first task is pulled (`follow` waits for it).
  let maxBytes = 256 * 1024;
  const payloadKnown = broker.maxPayload().then(
    (maxPayload) => {
      maxBytes = Math.min(maxBytes, maxPayload - 256);
    },
    // Failed as the worker (or its runtime) stopped: the stop's own abort, or a deadline that
    // passed after it (the server away). Nothing to say then: the worker has stopped.
    (error) => {
      if (!pulling.aborted)
        log.warn({ err: error }, "server's max payload unknown; results batched up to 256 KB");
    },
  );
  // Every job this worker answers is of its queue.
  const publishBatch = (jobId: string, body: string, msgId: string) =>
    broker.publishResults(queueName, jobId, body, msgId);
  const batcher = new ResultBatcher<TaskDelivery>(publishBatch, {
    maxEntries: 100,
    maxDelayMs: 5,
    get maxBytes() {
      return maxBytes;
    },
    idPrefix: `${id}.${Date.now().toString(36)}`,
    sendWhenIdle: true,
    quietMs: 2,
    onError: (error, jobId) => log.warn({ err: error, jobId }, "results not stored; tasks released"),
    // While a batch's publish is retried its tasks keep their leases, as while their handlers ran.
    keepEveryMs: (jobId) => leaseKeepEveryMs(jobs.get(jobId)?.record.settings.ackWaitMs ?? 30_000),
  });

  /** Lets a task go for redelivery; once the worker stops, as `TaskLease.handBack` says. */
  const letGo = (msg: TaskLease, delayMs?: number) => {
    if (pulling.aborted) msg.handBack(delayMs);
    else msg.nak(delayMs);
  };

  /** A task handed back unrun or failed (counted). */
  const release = (msg: TaskLease, delayMs?: number) => {
    stats.released++;
    letGo(msg, delayMs);
  };

  // Runs the handler and answers the task (worker-handle.ts).
  const handle = taskHandler({
    broker,
    agents,
    settings,
    runHandler,
    running,
    batcher,
    log,
    telemetry: core.telemetry,
    stats,
    giveUp: giveUp.signal,
    maxBytes: () => maxBytes,
    release,
    // A record read for a lane task of another submit than the job followed (worker-handle.ts):
    // read now, it is the job's news whatever revision the job followed kept (a store made
    // again counts revisions from 1 again).
    refresh: (found) => {
      const job = jobs.get(found.record.id);
      if (job && job.record.submitId !== found.record.submitId)
        job.revision = Math.min(job.revision, found.revision - 1);
      onRecord(found.record, found.revision);
    },
  });

  /**
   * Aborted once stop() has waited for everything. Until then the worker
   * hears its jobs' records and its queue's settings: a job cancelled while
   * it stops aborts its handlers, and its tasks waiting for a slot do not
   * start (they ran on until `stopTimeoutMs`, and started after); a pause
   * then is heard (what it holds on its last delivery is put back).
   */
  const hearing = new AbortController();
  // The runtime stops its workers first: this only ends a worker never stopped. Removed at the
  // stop: a runtime that starts and stops workers keeps no listener of each.
  const unhear = () => hearing.abort();
  core.stopping.addEventListener("abort", unhear, { once: true });

  // The queue's pause and limits (`rt.queues`), as every process sets them.
  const gate = new QueueGate(broker.queueControls, queueName, log, hearing.signal);
  core.loops.run(`worker-queue:${id}`, () => gate.watching);
  // Its first reads wait for the connection up to their deadline, not for the worker's stop:
  // `rt.stop()` waits for them (its abort ends them), so none settles after it.
  core.loops.track(`worker-reads:${id}`, () => Promise.all([payloadKnown, gate.ready]));

  /** Its agent's target now, if it is bound to one: a task runs against the one read before it starts. */
  const currentTarget = () => (agentId === undefined ? undefined : agents.get(agentId)?.current);

  // From a pulled task to its handler, and what a stopping worker did not start (worker-admission.ts).
  const { onTask, stoppingTasks } = taskAdmission({
    slots,
    running,
    gate,
    pulls,
    pulling,
    giveUp: giveUp.signal,
    handle,
    release,
    target: currentTarget,
    stats,
    log,
  });

  /** The jobs' task loops running: stop() waits for them to pass on what they pulled. */
  const taskLoops = new Set<Promise<unknown>>();

  // Each delayed job all of whose tasks are held is pulled from a second before its first is due.
  const dueWaits = new DueWaits(broker, core.clock, log);

  /**
   * The job followed is over here: finished or cancelled (its record heard, or its pull loop
   * found its consumer gone and its record ended), or `replaced` (its record names another
   * submit). Its handlers are aborted and what they would answer is dropped.
   */
  const endFollowed = (job: ActiveJob, replaced: boolean): void => {
    // A reason of its own (the abort's DOMException): a handler's signal shows it to user code,
    // also after the handler returned (work it started may hold the signal).
    if (replaced) job.replaced = true;
    job.ended.abort();
    // Their slots are free now, even if a handler ignores its signal; its answer is dropped.
    // Followed under another submit (`replaced`), what runs may be the record's job's own
    // tasks: handed back, not dropped (dropped, each waited out its lease, a delivery spent).
    running.settleAll(job, replaced ? release : undefined);
    // Nothing more of it comes through the lane: its keeper stops once nothing of it runs.
    if (job.record.lane) running.pullEnded(job);
    batcher.drop(job.record.id);
    if (jobs.get(job.record.id) === job) jobs.delete(job.record.id);
  };

  const follow = (record: JobRecord, revision: number): ActiveJob => {
    const job: ActiveJob = {
      record,
      revision,
      ended: new JobEnd(),
      running: new TaskList(),
      keeper: undefined,
      // The queue's lane loop pulls a lane job's tasks while it runs: its keeper is kept between
      // two of them as for a job's own loop (a job of one task has nothing between).
      pulling: record.lane === true && record.total > 1,
    };
    jobs.set(record.id, job);
    // Its tasks come through the queue's lane loop.
    if (record.lane) return job;
    log.info({ jobId: record.id }, "pulling tasks of job");
    // Until the worker stops (linked to `pulling`) or the job ends.
    const pull = pulls.link(job.ended.signal);
    job.pulling = true;
    const pulled = payloadKnown
      .then(() => dueWaits.until(record, pull.signal))
      .then(() =>
        // Ended or stopped while it waited for its due time: no loop to start.
        pull.signal.aborted
          ? undefined
          : broker.consumeTasks(
              record.queue,
              record.id,
              Math.min(concurrency, 256),
              (m) => onTask(m, job),
              pull.signal,
              pulling,
            ),
      )
      .then((end) => {
        // Its consumer gone and its record ended: over, though the record watch (behind, or
        // placed again) has not told it yet. Forgotten without its end, the end heard later
        // found nothing to end, and its running handlers were never aborted.
        if (end === "gone" && !pulling.aborted && jobs.get(record.id) === job) endFollowed(job, false);
      })
      .catch((error) => log.warn({ err: error, jobId: record.id }, "pulling tasks failed"))
      .finally(() => {
        pulls.unlink(pull);
        running.pullEnded(job);
        // Kept while the worker stops: its end still reaches the tasks it holds (`hearing`).
        if (jobs.get(record.id) === job && !pulling.aborted) jobs.delete(record.id);
      });
    // One of the runtime's loops: rt.stop() waits for it (it ends once `pulling` aborts).
    core.loops.run(`tasks:${record.id}`, () => pulled);
    taskLoops.add(pulled);
    void pulled.finally(() => taskLoops.delete(pulled));
    return job;
  };

  // The queue's lane loop, started from the first lane job on (worker-lane.ts).
  const lane = laneLoop({
    broker,
    queue: queueName,
    concurrency,
    jobs,
    follow,
    onTask,
    release,
    payloadKnown,
    pulling,
    loops: core.loops,
    log,
    name: `worker-lane:${id}`,
  });

  const onRecord = (record: JobRecord, revision: number) => {
    if (record.queue !== queueName) return;
    // Any lane job of the queue, over or not: a task left on the lane by one that is over is removed.
    // A stopping worker starts no loop; it still hears the jobs it holds tasks of end (`hearing`).
    if (record.lane) {
      if (!pulling.aborted) lane.pull();
      lane.heard(record, revision);
    }
    const active = takesTasks(record);
    const job = jobs.get(record.id);
    // Ordered by revision, never by time: a write heard late is not the job's news.
    if (job) {
      if (revision <= job.revision) return;
      job.revision = revision;
    }
    // Another submit of the key than the one followed: a 1-task lane submit rolled back and
    // made again, or the key's job made again after its record went (with the store, or by
    // cleanup once the end heard here was missed). The one followed is over here; the record's
    // own is followed instead (its lane tasks name it: those of the one followed are removed).
    const replaced = job !== undefined && record.submitId !== job.record.submitId;
    if (active && job && !replaced) dueWaits.wake(record);
    if (job && (!active || replaced)) endFollowed(job, replaced);
    if (active && (!job || replaced) && !pulling.aborted) follow(record, revision);
  };

  // What it hears of its queue's jobs: the runtime's record watch, and a pass over the jobs
  // already there each time that watch is placed (none once it stops).
  const queueJobs = new QueueJobs(
    { broker, records, loops: core.loops, log },
    queueName,
    {
      onRecord,
      onLane: lane.pull,
      followed: () => jobs.keys(),
      // The store may have been made again: the revisions known are of the old one (a pass reads them again).
      forgetRevisions: () => {
        for (const job of jobs.values()) job.revision = 0;
      },
    },
    pulling,
    `worker-jobs:${id}`,
    hearing.signal,
  );

  const statsNow = () => ({
    ...stats,
    inFlight: running.count,
    activeJobs: jobs.size,
    paused: gate.paused,
    queueState: gate.state,
  });
  const presence = announceWorker(core, broker.presence, {
    id,
    queue: queueName,
    concurrency,
    agent: agentId,
    stats: statsNow,
    target: currentTarget,
  });
  /** `work`, not waited for while the NATS connection is down (the memory broker has none). */
  const unlessNatsDown = (work: Promise<unknown>) =>
    broker.kind === "nats" ? unlessDown(core.connection, work) : work;
  let stopped: Promise<void> | undefined;
  return {
    id,
    stats: statsNow,
    stop: () => {
      stopped ??= (async () => {
        stopping.abort();
        slots.close();
        const timeout = setTimeout(() => {
          giveUp.abort();
          // Released now, whether or not their handlers heed the signal: stop() ends on time,
          // and an answer that comes later is ignored (the task is someone else's by then).
          running.releaseAll(release);
        }, settings.stopTimeoutMs);
        // The tasks its loops pulled and had not started are handed back, or run (`StoppingTasks.take`)
        // once their loop has passed them on. Not waited for while the connection is down (a
        // loop may wait for the server until its request times out).
        const passedOn = async () => {
          await Promise.all([...taskLoops, lane.stopped()]);
          await stoppingTasks.passedOn();
        };
        await unlessNatsDown(Promise.race([passedOn(), whenAborted(giveUp.signal)]));
        // Nothing more comes through the lane: its jobs' keepers stop once nothing of them runs.
        for (const job of jobs.values()) if (job.record.lane) running.pullEnded(job);
        await running.idle();
        // Nothing starts, nor is put back, from here on (a task still waiting goes back).
        stoppingTasks.over();
        // Past `stopTimeoutMs` too: a put-back must end before the connection closes.
        await unlessNatsDown(stoppingTasks.putBacksDone());
        hearing.abort();
        core.stopping.removeEventListener("abort", unhear);
        clearTimeout(timeout);
        // What still waits (at the gate for a permit, with the connection down) gives up now.
        giveUp.abort();
        try {
          // Its batches' leases are kept at their jobs' pace (`keepEveryMs`): the jobs are still known.
          await batcher.flush();
        } finally {
          presence.stop();
          jobs.clear();
        }
        // Their server consumers are deleted as they end: a stopped worker leaves none behind.
        // Not waited for while the connection is down (the deletes could only time out, 5 s
        // each): those consumers expire after a minute without a reader.
        await unlessDown(core.connection, Promise.all([gate.watching, queueJobs.stopped()]));
        log.info({ ...stats }, "worker stopped");
      })();
      return stopped;
    },
  };
};
