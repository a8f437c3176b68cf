import type { Broker, TaskLease } from "../adapters/broker.ts";
import type { RecordFound } from "../adapters/job-records.ts";
import { type AnswerPlan, answerTask, type HandlerAnswer, planAnswer } from "../effects/answer-task.ts";
import type { ResultBatcher } from "../effects/result-batcher.ts";
import { answerSubmit, ofOtherSubmit } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { validateWith } from "../kernel/queue.ts";
import { encodeDone } from "../kernel/result-wire.ts";
import type { TaskOutcome } from "../kernel/task-outcome.ts";
import { decodeTask, encodeProgress } from "../kernel/wire.ts";
import type { GatePass } from "./queue-gate.ts";
import { type RunningTask, type RunningTasks, TaskDelivery } from "./running-tasks.ts";
import type { Telemetry } from "./telemetry.ts";
import type { Task, TaskContext, WorkerAgents, WorkerSettings } from "./worker-options.ts";

/** What a worker's handling of its tasks shares with the rest of the worker. */
interface HandleDeps<Payload, Result> {
  readonly broker: Pick<Broker, "publishProgress" | "storeDeadLetter" | "getRecord">;
  readonly agents: Pick<WorkerAgents, "reportFailure">;
  readonly settings: WorkerSettings<Payload, Result>;
  /** The settings' handler, observed (`observedHandler`). */
  readonly runHandler: (task: Task<Payload>, ctx: TaskContext) => Promise<Result>;
  readonly running: RunningTasks;
  readonly batcher: ResultBatcher<TaskDelivery>;
  readonly log: Logger;
  readonly telemetry: Telemetry;
  readonly stats: { processed: number; failed: number };
  /** The worker's give-up signal: aborted when stop() stops waiting. */
  readonly giveUp: AbortSignal;
  /** The largest results message, as known now. */
  readonly maxBytes: () => number;
  readonly release: (msg: TaskLease, delayMs?: number) => void;
  /** Hands the worker a record read here (`dropOtherSubmit`), as its record watch would. */
  readonly refresh: (found: RecordFound) => void;
}

/**
 * A worker's handling of one running task: runs the handler, plans the
 * answer and gives it (effects/answer-task.ts), with the native worker's
 * counts, failover and unreadable messages.
 */
export const taskHandler = <Payload, Result>(deps: HandleDeps<Payload, Result>) => {
  const { broker, agents, settings, runHandler, running, batcher, log, stats, giveUp, release, refresh } =
    deps;
  const { queue: queueName, agentId, resultSchema } = settings;

  /** What decides an error's outcome besides the delivery: the same for every task. */
  const outcomeOptions = {
    ...(settings.isPermanent ? { isPermanent: settings.isPermanent } : {}),
    ...(agentId === undefined ? {} : { agentId }),
  };

  /**
   * Reports the task's failed target to the agent's lock and waits for the
   * lock's answer: when the agent moved on (this failure switched it, or an
   * earlier one did) the task goes back at once, to run on the new target.
   */
  const failOver = async (
    task: RunningTask,
    outcome: Extract<TaskOutcome, { kind: "failover" }>,
    target: string | undefined,
    error: unknown,
  ) => {
    const context = { jobId: task.job.record.id, index: task.index, attempt: task.msg.deliveryCount };
    let delayMs = outcome.delayMs;
    // The lock may queue this report behind others: keep the lease meanwhile.
    task.msg.working();
    try {
      // Always set: a bound worker starts only for a registered agent, and agents stay registered.
      const result =
        target === undefined ? undefined : await agents.reportFailure(outcome.agentId, { target, error });
      if (result !== undefined && result.outcome !== "exhausted") delayMs = 0;
      log.debug({ ...context, target, result, delayMs }, "target unavailable; task released");
    } catch (reportError) {
      log.warn({ ...context, target, err: reportError }, "target failure not reported; task retried later");
    }
    release(task.msg, delayMs);
  };

  const reportProgress = (jobId: string, index: number, info: unknown) => {
    const body = encodeProgress(index, info);
    if (body === undefined) log.debug({ jobId, index }, "progress note not JSON; dropped");
    else broker.publishProgress(queueName, jobId, body);
  };

  /**
   * Runs the task's handler and answers it. `target`: the agent's, read once
   * at the start: limited per target, a failure reported against it. The
   * gate's `pass` is told once the handler was called (the queue's rate
   * permits go back then), and ended once the task is answered. It settles
   * every failure of the handler itself: one that still escapes is a bug to
   * see, logged here, and the task, if it was not answered, is handed back
   * (its lease was kept while it ran: left running, it held its slot, and
   * its lease went on being kept, until `maxTaskMs`).
   * Never rejects (no catch of its own per task for the caller to add).
   */
  const handle = async (task: RunningTask, target: string | undefined, pass: GatePass): Promise<void> => {
    try {
      const { msg, job } = task;
      const jobId = job.record.id;
      const attempt = msg.deliveryCount;
      let payload: Payload | undefined;
      let answer: HandlerAnswer;
      // A 1-task lane job's answer names its task's submit (`AnswerContext.submit`).
      let submit: string | undefined;
      try {
        const body = decodeTask(msg.body);
        if (ofOtherSubmit(job.record, body.submit)) {
          await dropOtherSubmit(task, body.index, body.submit);
          return;
        }
        submit = answerSubmit(job.record, body);
        task.index = body.index;
        payload = body.payload as Payload;
        if (attempt > 1) log.warn({ jobId, index: body.index, attempt }, "task redelivered");
        const ran = runHandler(
          { id: `${jobId}.${body.index}`, jobId, index: body.index, payload, attempt },
          {
            get signal() {
              return task.signal();
            },
            heartbeat() {
              msg.working();
            },
            progress(info: unknown) {
              msg.working();
              reportProgress(jobId, task.index, info);
            },
            logger: log,
            target,
          },
        );
        pass.started();
        const result = await ran;
        const value = resultSchema
          ? await validateWith(resultSchema, result, `result of task ${task.index}`)
          : result;
        answer = { ok: true, entry: encodeDone(task.index, value) };
      } catch (error) {
        if (task.settled) return running.lateAnswer(task);
        if (giveUp.aborted || job.ended.aborted) {
          // Cancelled job: nothing to answer. Stopping worker: hand the task back now.
          running.settle(task);
          if (!job.ended.aborted) release(msg);
          return running.done();
        }
        answer = { ok: false, error };
      }
      const failure = answer.ok ? undefined : answer.error;
      const plan: AnswerPlan =
        task.index < 0
          ? {
              outcome: {
                kind: "term",
                error: `unreadable task message: ${failure instanceof Error ? failure.message : String(failure)}`,
              },
              entry: undefined,
            }
          : planAnswer(task.index, answer, {
              attempt,
              maxDeliver: job.record.settings.maxDeliver,
              backoffMs: job.record.settings.backoffMs,
              maxBatchBytes: deps.maxBytes(),
              submit,
              ...outcomeOptions,
            });
      if (!running.settle(task)) return running.lateAnswer(task);
      try {
        // Awaited only when it waits (a failover's report, a dead letter's store): most answers are
        // given in this turn.
        const finishing = finish(task, plan, payload, failure, target);
        if (finishing) await finishing;
      } finally {
        running.done();
      }
    } catch (error) {
      log.warn(
        { err: error, jobId: task.job.record.id, index: task.index },
        "task not answered: its handling failed; handed back",
      );
      if (running.settle(task)) {
        release(task.msg);
        running.done();
      }
    } finally {
      pass.end();
    }
  };

  /**
   * A lane task of another submit than the job followed (`ofOtherSubmit`),
   * found so again in the job's stored record: one rolled back, removed,
   * neither run nor answered (the job's submit that committed published the
   * same task again). Its worker held it while that submit ran, or its
   * rollback had not removed it yet. When the record names the task's own
   * submit, the job followed here is the stale one (the key's job made
   * again after its record went): the worker is handed the record (it
   * follows that job instead) and the task goes back at once. A record not
   * read: the task goes back a second later (a delivery spent either way).
   */
  const dropOtherSubmit = async (task: RunningTask, index: number, submit: string | undefined) => {
    if (!running.settle(task)) return;
    const { id: jobId, submitId } = task.job.record;
    try {
      let found: RecordFound | undefined;
      try {
        found = await broker.getRecord(jobId);
      } catch (error) {
        log.debug(
          { err: error, jobId, index },
          "lane task of another submit than the job's; record not read, the task goes back",
        );
        release(task.msg, 1000);
        return;
      }
      if (found && found.record.submitId === submit) {
        log.info(
          { jobId, index, submit, submitId },
          "lane task of a submit not followed yet; the job followed again",
        );
        refresh(found);
        release(task.msg);
        return;
      }
      log.info({ jobId, index, submit, submitId }, "lane task of a submit rolled back; removed, not run");
      task.msg.term();
    } finally {
      running.done();
    }
  };

  /** The native worker's side of the answer path: counts, failover, the unreadable message. */
  const finish = (
    task: RunningTask,
    plan: AnswerPlan,
    payload: Payload | undefined,
    failure: unknown,
    target: string | undefined,
  ): void | Promise<void> => {
    const { msg, job, index } = task;
    const jobId = job.record.id;
    const attempt = msg.deliveryCount;
    const { outcome } = plan;
    if (outcome.kind === "nak") {
      log.debug(
        { jobId, index, attempt, delayMs: outcome.delayMs, error: outcome.error },
        "task failed; retry later",
      );
    } else if (outcome.kind === "failover") return failOver(task, outcome, target, failure);
    else if (outcome.kind === "ack") stats.processed++;
    else stats.failed++;
    if (index < 0) return msg.term();
    const delivery = new TaskDelivery(task, outcome.kind, release, log, deps.telemetry);
    // Keep the payload and the last error where `redrive` can find them.
    return answerTask(jobId, plan, delivery, batcher, (error, submit) =>
      broker.storeDeadLetter(
        {
          queue: queueName,
          jobId,
          index,
          payload,
          error,
          deliveries: attempt,
          at: Date.now(),
          source: "worker",
          taskSeq: msg.seq,
          ...(submit === undefined ? {} : { submit }),
        },
        // The task message's sequence: a redriven copy that dies again, within the dead-letter
        // stream's duplicate window, is another letter (by job, task and delivery alone it was
        // dropped as a duplicate of the first).
        `deadw.${jobId}.${index}.${attempt}.${msg.seq}`,
      ),
    );
  };

  return handle;
};
