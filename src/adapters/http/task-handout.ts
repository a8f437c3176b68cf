import {
  awaitsLaneCommit,
  type JobRecord,
  laneAckWaitMs,
  laneMaxDeliver,
  ofOtherSubmit,
  takesTasks,
} from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import { decodeTask, type TaskBody } from "../../kernel/wire.ts";
import type { LeaseSettle } from "../broker.ts";
import type { LeasedTask } from "../task-leasing.ts";
import type { Caller, LeasePort, ReservedTask } from "./lease-port.ts";
import type { OwnLeaseEnds } from "./own-lease-ends.ts";
import { type ReceiptClock, receiptClock } from "./receipt-clock.ts";
import { leaseEnd, notAfterOf, type ReceiptSigner } from "./receipts.ts";

/**
 * A reserved task with what this instance keeps of its lease, and whether
 * this delivery is its task's last (a hand-back puts it back, not a nak).
 */
export type Leased = ReservedTask & {
  readonly ref: string;
  readonly until: number;
  readonly lastDelivery: boolean;
};

/** A delivery whose task message could be read, with the record of its job. */
type Readable = { readonly t: LeasedTask; readonly body: TaskBody; readonly record: JobRecord };

/** A lane task whose job's record was not read goes back for this long, as at a native worker (api/worker-lane.ts `laneJobOf`). */
const unreadJobDelayMs = 1000;

/**
 * A lane task of a job whose submit has not written its commit yet (a job
 * of more tasks, `awaitsLaneCommit`) goes back: a native worker holds it
 * until the commit; a reserve cannot wait for it. For 250 ms the first
 * time, twice as long each time after, up to 4 s (a submit that died before
 * its commit waits for the reaper, ~40 s). Each release spends a delivery;
 * the last is put back as a copy instead, delivered from 1 again.
 */
const uncommittedJobDelayMs = (deliveryCount: number) => Math.min(4000, 250 * 2 ** (deliveryCount - 1));

/**
 * Takes tasks from the broker for a worker of `TaskLeases` (task-leases.ts),
 * of one job or of a queue's lane, and hands them out, each with a receipt
 * naming its delivery and its lease's end; hands back those no worker gets.
 */
export class TaskHandout {
  readonly #port: LeasePort;
  readonly #signer: ReceiptSigner;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #monotonic: () => number;
  readonly #ownEnds: OwnLeaseEnds;

  constructor(
    port: LeasePort,
    signer: ReceiptSigner,
    log: Logger,
    clocks: { readonly now: () => number; readonly monotonic: () => number; readonly ownEnds: OwnLeaseEnds },
  ) {
    this.#port = port;
    this.#signer = signer;
    this.#log = log;
    this.#now = clocks.now;
    this.#monotonic = clocks.monotonic;
    this.#ownEnds = clocks.ownEnds;
  }

  /** Up to `max` tasks of the job (a job's own consumer). */
  async lease(record: JobRecord, max: number, caller: Caller, signal?: AbortSignal): Promise<Leased[]> {
    // Known before anything is leased: without it, a 503 and no task held by nobody.
    const clock = await receiptClock(this.#port, this.#now, this.#monotonic);
    const { leased, sentAt } = await this.#pull(clock, (pulling) =>
      this.#port.fetchTasks(record.queue, record.id, max, pulling),
    );
    const readable = await this.#readable(leased, { jobId: record.id });
    const tasks = await this.#handOut(
      readable.map(({ t, body }) => ({ t, body, record })),
      leaseEnd(sentAt, record.settings.ackWaitMs),
      { caller, clock, signal },
    );
    this.#logReserved(record.id, record.queue, tasks, caller);
    return tasks;
  }

  /**
   * Up to `max` tasks of the queue's lane jobs. The lane serves every lane
   * job of the queue, over or not: a task whose job is over (or gone) is
   * termed, never run. Its delivery limit is the server's, as a job
   * consumer's: an exhausted task is dead-lettered from its advisory.
   */
  async leaseLane(queue: string, max: number, caller: Caller, signal?: AbortSignal): Promise<Leased[]> {
    const clock = await receiptClock(this.#port, this.#now, this.#monotonic);
    const { leased, sentAt } = await this.#pull(clock, (pulling) =>
      this.#port.fetchLane(queue, max, pulling),
    );
    const readable = await this.#readable(leased, { queue });
    const records = new Map<string, JobRecord | undefined>();
    await Promise.all(
      [...new Set(readable.map(({ t }) => t.jobId))].map(async (id) => {
        try {
          records.set(id, (await this.#port.getRecord(id))?.record);
        } catch (error) {
          // Left out of `records`: its task goes back, to come again (its job may well run).
          this.#log.debug({ jobId: id, queue, err: error }, "lane task's job not read; the task goes back");
        }
      }),
    );
    const over: LeasedTask[] = [];
    const notRead: LeasedTask[] = [];
    const uncommitted: LeasedTask[] = [];
    const runnable: Readable[] = [];
    for (const { t, body } of readable) {
      const record = records.get(t.jobId);
      if (!records.has(t.jobId)) notRead.push(t);
      else if (record && awaitsLaneCommit(record)) uncommitted.push(t);
      else if (!record || !takesTasks(record) || ofOtherSubmit(record, body.submit)) over.push(t);
      else runnable.push({ t, body, record });
    }
    // Every lane job has the lane's delivery limit: its last delivery is known without its record.
    const back = (tasks: readonly LeasedTask[]) =>
      tasks.map((t) => ({
        ...t,
        lastDelivery: t.deliveryCount >= laneMaxDeliver,
        until: leaseEnd(sentAt, laneAckWaitMs),
      }));
    await this.handBack(back(notRead), unreadJobDelayMs, "lane tasks of jobs not read");
    await this.handBack(
      back(uncommitted).map((t) => ({ ...t, delayMs: uncommittedJobDelayMs(t.deliveryCount) })),
      unreadJobDelayMs,
      "lane tasks of jobs not committed yet",
    );
    if (over.length > 0) await this.#endOver(queue, over, records);
    const tasks = await this.#handOut(runnable, leaseEnd(sentAt, laneAckWaitMs), {
      caller,
      clock,
      signal,
    });
    for (const task of tasks) this.#logReserved(task.jobId, queue, [task], caller);
    return tasks;
  }

  /**
   * Runs a pull, and tells when it was sent (`pulling`), which each
   * delivery's ack wait on the server follows: its lease is timed from then.
   * Not from before the call, as a pull may first wait for the connection
   * (up to its deadline), and its receipts then came with that much less
   * lease (none with a short ack wait); nor from its answer, which would
   * time the lease past the server's. A port that does not tell: from
   * before the call (a shorter lease, never a longer one).
   */
  async #pull(clock: ReceiptClock, fetch: (pulling: () => void) => Promise<LeasedTask[]>) {
    // On the request's clock: the instance's stepped while the pull waited was not the server's.
    let sentAt = clock.now();
    const leased = await fetch(() => {
      sentAt = clock.now();
    });
    return { leased, sentAt };
  }

  /**
   * Terms lane tasks of jobs that are over (or have no record), and those of
   * a submit rolled back (`ofOtherSubmit`): nothing may run them.
   */
  async #endOver(
    queue: string,
    over: readonly LeasedTask[],
    records: ReadonlyMap<string, JobRecord | undefined>,
  ) {
    this.#log.info(
      {
        queue,
        jobs: over.map((t) => ({ jobId: t.jobId, status: records.get(t.jobId)?.status ?? "unknown" })),
      },
      "lane tasks of jobs that are over terminated, not run",
    );
    await this.#port
      .settle(over.map((t) => ({ ref: t.ref, action: "term" })))
      .catch((error: unknown) =>
        this.#log.warn(
          { queue, err: error },
          "lane tasks of jobs that are over not terminated; offered again once their lease runs out",
        ),
      );
  }

  /** The deliveries whose task message is jetstate's; the others are terminated (nothing in them to run). */
  async #readable(
    leased: readonly LeasedTask[],
    where: { jobId: string } | { queue: string },
  ): Promise<{ t: LeasedTask; body: TaskBody }[]> {
    const readable: { t: LeasedTask; body: TaskBody }[] = [];
    const unreadable: LeaseSettle[] = [];
    for (const t of leased) {
      try {
        readable.push({ t, body: decodeTask(t.body) });
      } catch {
        unreadable.push({ ref: t.ref, action: "term" });
      }
    }
    if (unreadable.length > 0) {
      this.#log.error({ ...where, count: unreadable.length }, "unreadable task messages terminated");
      await this.#port
        .settle(unreadable)
        .catch((error: unknown) =>
          this.#log.warn(
            { ...where, err: error },
            "unreadable task messages not terminated; offered again once their lease runs out",
          ),
        );
    }
    return readable;
  }

  /**
   * Signs a receipt for each delivery, leased until `expires` (on this
   * instance's clock; the receipt's on the server's); hands them back if the
   * worker went away.
   */
  async #handOut(
    deliveries: readonly Readable[],
    expires: number,
    to: { readonly caller: Caller; readonly clock: ReceiptClock; readonly signal?: AbortSignal | undefined },
  ): Promise<Leased[]> {
    const { caller, clock, signal } = to;
    const leaseMs = expires - clock.now();
    const tasks = deliveries.map(
      ({ t, body, record }): Leased => ({
        id: `${record.id}.${body.index}`,
        jobId: record.id,
        index: body.index,
        attempt: t.deliveryCount,
        payload: body.payload,
        receipt: this.#signer.sign({
          v: 3,
          s: record.submitId,
          j: record.id,
          i: body.index,
          r: t.ref,
          w: caller.identity,
          d: t.deliveryCount,
          x: clock.toReceipt(expires),
        }),
        leaseMs,
        ref: t.ref,
        until: expires,
        lastDelivery: t.deliveryCount >= record.settings.maxDeliver,
      }),
    );
    for (const t of tasks) this.#ownEnds.timed(t.ref, clock.toMonotonic(expires));
    if (signal?.aborted) {
      // The worker went away before it got them: hand them back now rather than after the lease.
      await this.handBack(tasks, 0, "tasks of a worker gone away");
      return [];
    }
    return tasks;
  }

  /**
   * Releases leased tasks no worker gets (`what` they are, for the log if
   * that fails): offered again after `delayMs`. One on its last delivery is
   * put back (a copy, delivered from 1 again): a nak would spend that
   * delivery, and it died unrun (a worker gone away mid-reserve, with a
   * `maxDeliver: 1` job). Sent within their leases (`until`) or not at all:
   * sent later, a nak would hand back the task's next holder's delivery.
   */
  async handBack(
    tasks: readonly { ref: string; jobId: string; lastDelivery?: boolean; delayMs?: number; until: number }[],
    delayMs: number,
    what: string,
  ) {
    if (tasks.length === 0) return;
    const notAfter = notAfterOf(
      tasks.map((t) => t.until),
      this.#now(),
    );
    await this.#port
      .settle(
        tasks.map(
          (t): LeaseSettle =>
            t.lastDelivery
              ? { ref: t.ref, action: "putBack" }
              : { ref: t.ref, action: "nak", delayMs: t.delayMs ?? delayMs },
        ),
        notAfter,
      )
      .catch((error: unknown) => {
        const fields = { jobIds: [...new Set(tasks.map((t) => t.jobId))], err: error };
        // A last delivery not put back (its copy not stored) dies once its lease runs out.
        if (tasks.some((t) => t.lastDelivery))
          this.#log.warn(fields, `${what} not all handed back; those on their last delivery die unrun`);
        else this.#log.debug(fields, `${what} not handed back; offered again once their lease runs out`);
      });
  }

  /** The worker's identity is logged with every reservation, per job. */
  #logReserved(jobId: string, queue: string, tasks: readonly Leased[], caller: Caller): void {
    if (tasks.length === 0) return;
    this.#log.info(
      {
        jobId,
        queue,
        workerId: caller.identity,
        tasks: tasks.map((t) => t.index),
        attempts: tasks.map((t) => t.attempt),
      },
      "tasks reserved",
    );
  }
}
