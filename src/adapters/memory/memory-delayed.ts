import { RuntimeStopped } from "../../kernel/errors.ts";
import type { JobRecord, JobTasksRef } from "../../kernel/job-record.ts";
import { decodeHeld, encodeHeld, type HeldTaskBody } from "../../kernel/wire.ts";
import { type DelayedTasks, type HeldAnswer, type HeldTask, moversInFlight } from "../delayed-tasks.ts";
import type { LaneLease } from "../task-queue.ts";
import { checkToken, type MemoryServerState } from "./memory-server.ts";

/**
 * The delayed streams in memory: a second task stream on the server with a
 * `due` consumer per queue (its filter that queue's held tasks) of unlimited
 * deliveries, whose nak delays run on the server's clock, as the NATS ones
 * run on the server's timers. Shared by every runtime on the server, as the
 * streams are on NATS.
 */
export class MemoryDelayedTasks implements DelayedTasks {
  readonly #server: MemoryServerState;
  readonly #open: (operation: string) => void;
  readonly #stop: AbortSignal;

  constructor(server: MemoryServerState, open: (operation: string) => void, stop: AbortSignal) {
    this.#server = server;
    this.#open = open;
    this.#stop = stop;
  }

  async holdTasks(record: JobRecord, held: readonly HeldTaskBody[], signal: AbortSignal): Promise<void> {
    const op = "job.tasks.hold";
    this.#open(op);
    if (signal.aborted) throw new RuntimeStopped({ message: `${op}: aborted` });
    const subject = this.#subject(op, record);
    this.#server.due(record.queue);
    for (const task of held) {
      const body = encodeHeld(record.queue, task);
      this.#server.checkPayload(op, body, `held.${task.msgId}`);
      this.#server.delayed.publish(subject, body, `held.${task.msgId}`);
    }
  }

  async consumeHeld(
    queue: string,
    onHeld: (task: HeldTask) => Promise<HeldAnswer>,
    signal: AbortSignal,
  ): Promise<void> {
    const op = "job.tasks.move";
    this.#open(op);
    const stop = AbortSignal.any([signal, this.#stop]);
    const due = this.#server.due(checkToken(op, "queue", queue));
    // Side by side, as on NATS (adapters/nats/delayed-tasks.ts).
    const inFlight = new Set<Promise<void>>();
    try {
      for (;;) {
        const lease = await due.take(stop);
        if (lease === "gone" || lease === "stopped") return;
        const handled = this.#handle(lease, onHeld).finally(() => inFlight.delete(handled));
        inFlight.add(handled);
        if (inFlight.size >= moversInFlight) await Promise.race(inFlight);
      }
    } finally {
      await Promise.all(inFlight);
    }
  }

  async #handle(lease: LaneLease, onHeld: (task: HeldTask) => Promise<HeldAnswer>): Promise<void> {
    let task: HeldTask;
    try {
      task = { ...decodeHeld(lease.body), jobId: lease.jobId };
    } catch {
      lease.term(); // nothing jetstate wrote: never handed over
      return;
    }
    try {
      const answer = await onHeld(task);
      if (answer.kind === "done") lease.ack();
      else lease.nak(answer.ms);
    } catch {
      lease.nak(1000);
    }
  }

  async releaseHeld(task: HeldTask): Promise<void> {
    const op = "job.tasks.release";
    this.#open(op);
    const subject = this.#server.names.tasksSubject(
      checkToken(op, "queue", task.queue),
      checkToken(op, "jobId", task.jobId),
    );
    this.#server.tasks.publish(subject, task.body, task.msgId);
  }

  async heldCount(queue: string, jobId: string): Promise<number> {
    const op = "job.tasks.held";
    this.#open(op);
    return this.#server.delayed.count(this.#subject(op, { queue, id: jobId }));
  }

  /** Removes the job's held tasks: none of them fires later. */
  unhold(job: JobTasksRef): void {
    this.#server.delayed.purge(this.#subject("job.tasks.unhold", job));
  }

  #subject(op: string, job: Pick<JobTasksRef, "queue" | "id">): string {
    return this.#server.names.delayedSubject(
      checkToken(op, "queue", job.queue),
      checkToken(op, "jobId", job.id),
    );
  }
}
