import type { Actor } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import type { Clock, SteadyClock } from "../kernel/clock.ts";
import type { ResultEntry } from "../kernel/job-progress.ts";
import { isFinal } from "../kernel/job-record.ts";
import { answersOfSubmit, decodeResults, markerCounts } from "../kernel/result-wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import { stallStart } from "../machines/job-context.ts";
import { jobStatusOf } from "../machines/job-state.ts";
import type { RunState } from "./job-run.ts";

/** How much of a job's results its actor keeps for `results()` (a small job's: one message). */
const keptBytes = 8192;

/**
 * The job's clock: not one of the runtime's loops but a timer of the
 * job's own, stopped with its feed when the actor stops (`jobs.stop()`
 * stops every actor before the runtime's loops close), with no I/O in flight
 * to wait for. It wakes when the job's stall (or its stalled timeout) may be
 * due, never sooner than `everyMs`: a job that nothing answers ticks once a
 * `stallAfterMs`, not once a second (10,000 live jobs were 10,000 timer
 * wakes and statechart events a second). Its time is the runtime's steady
 * clock: a step of the wall clock is no time gone by (a step ahead past the
 * stall window wrote a running job stalled). Returns its stop.
 */
const tick = (
  clock: Clock,
  steady: SteadyClock,
  job: Actor<JobMachine>,
  everyMs: number,
  supervising: () => boolean,
) => {
  let timer: unknown;
  let stopped = false;
  const wake = () => {
    if (stopped) return;
    job.send({
      type: "clock.tick",
      now: steady.now(),
      wallAhead: steady.wallAhead(),
      supervising: supervising(),
    });
    timer = clock.setTimeout(wake, untilDue(job.getSnapshot(), steady.now(), everyMs));
  };
  timer = clock.setTimeout(wake, untilDue(job.getSnapshot(), steady.now(), everyMs));
  return () => {
    stopped = true;
    clock.clearTimeout(timer);
  };
};

/**
 * The job's feed: its results, and its clock's ticks, sent to its actor as events for the
 * actor's whole life. Not an actor invoked by the machine: an invoked actor is about 2 KB
 * of heap more on every live job (its actor, mailbox, observers and scope), for nothing
 * the machine decides. The feed dedupes nothing, the bitmap does. Returns its stop.
 */
export const jobFeed = (
  broker: Broker,
  clock: Clock,
  steady: SteadyClock,
  state: RunState,
  everyMs: number,
): (() => void) => {
  const { record, log, self, resumeFrom } = state.run;
  const job = self();
  const jobId = record.id;
  // A watcher's clock decides no end: the stalled timeout is applied by the job's supervisor
  // (its lease taken here), even one whose lease ran out a moment ago (a clock jump), and
  // only once the answers stored before this actor are counted: those its record lacks (given
  // while nobody supervised it) are progress, which a takeover's replay finds. Its first tick
  // failed such a job "stalled too long" while the replay still ran. A replay that never ends
  // (the feed failing) holds the timeout back by one more stalled timeout at most.
  const since = steady.now();
  const supervising = () =>
    broker.leases.supervises(jobId) &&
    state.run.seen.fenced !== false &&
    (state.caughtUp || steady.now() - since >= record.settings.stalledTimeoutMs);
  const stopTicking = tick(clock, steady, job, everyMs, supervising);
  if (resumeFrom && isFinal(resumeFrom)) {
    state.caughtUp = true;
    return stopTicking;
  }
  const backlog: ResultEntry[] = [];
  const holdsMarker = (redrive: string) =>
    backlog.some((e) => e.redrive === true && markerCounts(e.id ?? "", redrive));
  const flush = () => {
    // Answers read while the submit is still running (an idempotent resubmit of a job
    // that has them) wait for it: the machine counts from `running` on.
    // A stopped actor takes nothing more (a catch-up's last read may land after its end).
    if (!state.caughtUp || backlog.length === 0) return;
    const snapshot = job.getSnapshot();
    const status = snapshot.status === "active" ? jobStatusOf(snapshot.value) : undefined;
    if (status === undefined || status === "queuing") return;
    // Its end decided, the machine counts nothing: held, not dropped, for an end whose write
    // met a redrive not counted here (`state.reopenFor`), until they hold its marker.
    const reopen = state.reopenFor !== undefined && holdsMarker(state.reopenFor);
    if ((status === "succeeded" || status === "failed") && !reopen) return;
    const entries = backlog.splice(0);
    // Counted as sent (the machine counts in the send): an end decided from these knows them.
    for (const e of entries) {
      if (e.redrive !== true) continue;
      state.redrives ??= new Set();
      state.redrives.add(e.id ?? "");
    }
    if (reopen) state.reopenFor = undefined;
    job.send({
      type: "results.received",
      entries,
      at: steady.now(),
      ...(state.replay ? { replay: true } : {}),
      ...(reopen ? { reopen: true } : {}),
    });
    state.replay = false;
  };
  state.flush = flush;
  // Answers read while queuing are handed over once it has left: then nothing more to wait
  // for (one observer less on every live job).
  const leftQueuing = job.subscribe((s) => {
    if (jobStatusOf(s.value) === "queuing") return;
    leftQueuing.unsubscribe();
    flush();
  });
  state.kept = [];
  // Not one of the runtime's loops for the job's whole life: the broker tracks what it reads
  // from the server (a catch-up), and a live reader ends as the actor stops.
  const stopReading = broker.followResults(
    record.queue,
    jobId,
    (body, pending) => {
      if (state.kept) {
        state.keptSize += body.length;
        if (state.keptSize <= keptBytes) state.kept.push(body);
        else state.kept = undefined;
      }
      try {
        backlog.push(...answersOfSubmit(decodeResults(body), record.submitId));
      } catch (error) {
        // Not written by jetstate: nothing in it to count.
        log.warn({ err: error }, "results message skipped");
      }
      // The first time through, hand over everything stored in one event once caught
      // up: a redrive marker must be counted before the job decides it is over.
      if (!state.caughtUp && pending > 0) return;
      state.caughtUp = true;
      flush();
      wakeCaughtUp(state);
    },
    {
      onCaughtUp: () => {
        state.caughtUp = true;
        // Nothing was stored: no replay to come, the next answer is a live one.
        if (backlog.length === 0) state.replay = false;
        wakeCaughtUp(state);
      },
      // A new submit: nothing of the job is stored before its tasks are published, after this.
      fresh: state.run.bodies !== undefined,
      onFailed: (error) => log.warn({ err: error }, "results feed failed"),
    },
  );
  return () => {
    leftQueuing.unsubscribe();
    stopTicking();
    stopReading();
  };
};

/** The feed has handed over what was stored when it started: its waiter, if any, wakes. */
const wakeCaughtUp = (state: RunState) => {
  const wake = state.onCaughtUp;
  state.onCaughtUp = undefined;
  wake?.();
};

/** The longest a job's clock sleeps. */
const idleWakeMs = 60_000;

/**
 * How long the job's clock may sleep: until the stall is due (running), or
 * the stalled timeout (stalled), at least `everyMs` (the tick period the
 * machine asks for: how late a stall may be seen). At most `stallAfterMs`
 * (and a minute): a stalled job without a timeout that makes progress and
 * stalls again is seen stalling on time. Before the job runs: `everyMs`.
 */
const untilDue = (snapshot: ReturnType<Actor<JobMachine>["getSnapshot"]>, now: number, everyMs: number) => {
  const { context } = snapshot;
  const status = jobStatusOf(snapshot.value);
  const dueAt =
    status === "running"
      ? stallStart(context, now, context.wallAhead) + context.settings.stallAfterMs
      : status === "stalled"
        ? context.settings.stalledTimeoutMs > 0 && context.stalledSince !== null
          ? context.stalledSince + context.settings.stalledTimeoutMs
          : Number.POSITIVE_INFINITY
        : now + everyMs;
  const longest = Math.max(everyMs, Math.min(idleWakeMs, context.settings.stallAfterMs));
  return Math.min(Math.max(everyMs, dueAt - now), longest);
};
