import { answerTask, planAnswer } from "../../effects/answer-task.ts";
import { ResultBatcher } from "../../effects/result-batcher.ts";
import { answerSubmit, type JobRecord, leaseKeepEveryMs } from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import type { RecordedAnswer } from "../broker.ts";
import { answerDigest, countStatuses, handlerAnswer, messageId, repeated } from "./answer-outcomes.ts";
import type { LeaseBook } from "./lease-book.ts";
import type { Caller, ItemOutcome, LeasePort } from "./lease-port.ts";
import { type Answering, ReceiptDelivery, type Settling } from "./receipt-delivery.ts";
import { settleDeliveries } from "./receipt-settle.ts";
import { leaseEnd, ofJobSubmit, type ReceiptClaims } from "./receipts.ts";
import type { ResultItem } from "./request-bodies.ts";

/**
 * Same limit as the native worker's: one results message of at most this,
 * and less when the server's max payload is less (with the message id's
 * header, 256 bytes).
 */
const maxResultsMessageBytes = 256 * 1024;

/** One answer being settled by this process; concurrent requests for the same delivery wait for it. */
type InFlight = Promise<RecordedAnswer | undefined>;

/**
 * The answers posted through receipts: each delivery is answered once, by
 * the broker's record of it (`claimAnswer`), not by this process's memory:
 * a receipt replayed after a restart, or on another instance sharing the
 * secret, finds the first answer and does nothing. The same answer again is
 * a `duplicate` (a retried POST); a different one is a `conflict`. What a
 * claimed answer does is the native worker's answer path
 * (effects/answer-task.ts): results stored (one message per request and
 * 256 KB, its PubAck before any ack), then acked or termed; retries naked.
 */
export class ReceiptAnswers {
  readonly #port: LeasePort;
  readonly #book: LeaseBook;
  readonly #log: Logger;
  readonly #inFlight = new Map<string, InFlight>();
  /** The largest results message, once the server's max payload is known (read once, at the first request). */
  #maxBytes: Promise<number> | undefined;

  constructor(port: LeasePort, book: LeaseBook, log: Logger) {
    this.#port = port;
    this.#book = book;
    this.#log = log;
  }

  /** True while a request of this process answers the delivery. */
  answering(ref: string): boolean {
    return this.#inFlight.has(ref);
  }

  /** Stores the results, then settles the leases; per item what became of it. Receipts are verified. */
  async submit(
    record: JobRecord,
    items: readonly ResultItem[],
    claims: readonly ReceiptClaims[],
    /** The caller, and the request's clock (receipt-clock.ts), which the claims' ends are on. */
    by: { readonly caller: Caller; readonly now: () => number },
  ): Promise<ItemOutcome[]> {
    const { caller, now: clock } = by;
    const jobId = record.id;
    const now = clock();
    const outcomes: Promise<ItemOutcome>[] = [];
    // Each outcome is awaited only once the request's I/O is done (`Promise.all` below): one that
    // fails before (a receipt twice, its first copy's publish failed) would be a rejection nobody
    // handled for a turn of the event loop, which ends the process. Handled here; the request
    // still fails with it.
    const outcome = (settled: Promise<ItemOutcome>) => {
      settled.catch(() => undefined);
      outcomes.push(settled);
    };
    const mine: Answering[] = [];
    for (const [n, item] of items.entries()) {
      const c = claims[n];
      if (c === undefined) throw new Error(`results[${n}]: no verified receipt`);
      const id = `${jobId}.${c.i}`;
      const digest = answerDigest(item);
      const running = this.#inFlight.get(c.r);
      if (running) {
        // Answered by a request of this process right now (or earlier in this one): its outcome decides.
        outcome(running.then((first) => repeated(id, digest, first)));
        continue;
      }
      if (c.x <= now) {
        outcome(this.#afterItsLease(id, digest, c.r));
        continue;
      }
      if (!ofJobSubmit(c, record)) {
        // Leased from another submit of the job's key (the store came back empty since): its
        // delivery is gone, and an ack by its sequence would end the new job's delivery there.
        this.#book.release(caller.identity, c.r);
        outcome(this.#afterItsLease(id, digest, c.r));
        continue;
      }
      const answering = this.#open(c, id, digest, item);
      mine.push(answering);
      outcome(answering.outcome);
    }
    const failures: unknown[] = [];
    const maxBytes = await this.#maxMessageBytes();
    const won = await this.#claim(mine, caller, failures);
    // Its lease may have ended while the claim was made (a KV write waiting out a reconnect), its
    // task delivered to another worker: an ack or a +WPI on this delivery would settle or keep
    // that worker's (JetStream answers a delivery by its stream sequence). Expired: the claim is
    // given back below.
    const claimedAt = clock();
    const claimed = won.filter((a) => a.c.x > claimedAt);
    const request: Settling = {
      stored: [],
      retries: [],
      failures,
      releases: [],
      unsettled: (a) => {
        a.failed = true;
        request.releases.push(
          this.#port
            .releaseAnswer(a.c.r, a.revision)
            .catch((error: unknown) =>
              this.#log.warn(
                { err: error, jobId: a.c.j },
                "answer claim not given back: a retry of this receipt finds it pending",
              ),
            ),
        );
        a.finish(undefined);
      },
      answered: (d) => {
        if (d.status === "done" || d.status === "failed" || d.status === "dead")
          this.#port.answered?.(record.queue, d.status, d.a.c.d);
      },
    };
    const batcher = new ResultBatcher<ReceiptDelivery>(
      (_jobId, body, msgId) => this.#port.publishResults(record.queue, jobId, body, msgId),
      {
        maxEntries: Number.POSITIVE_INFINITY,
        // Sent by flush() below, once every answer of the request is in.
        maxDelayMs: 60_000,
        maxBytes,
        idPrefix: jobId,
        messageId: (id, deliveries) =>
          messageId(
            id,
            deliveries.map((d) => d.a.c.r),
          ),
        onError: (error) => failures.push(error),
      },
    );
    for (const a of won) if (a.c.x <= claimedAt) request.unsettled(a);
    const stopKeeping = this.#keepWhileStoring(claimed, record, clock);
    try {
      await this.#store(claimed, record, request, batcher, maxBytes);
    } finally {
      stopKeeping();
    }
    const settling = { port: this.#port, book: this.#book, log: this.#log, now: clock, caller };
    await settleDeliveries(settling, request.stored, request);
    await settleDeliveries(settling, request.retries, request);
    await Promise.all(request.releases);
    const answered = await Promise.all(outcomes);
    this.#log.info(
      {
        jobId,
        workerId: caller.identity,
        ...countStatuses(answered),
        tasks: answered.map((o) => o.id.slice(jobId.length + 1)),
      },
      "results received",
    );
    if (failures.length > 0) throw failures[0];
    return answered;
  }

  /**
   * The largest results message: 256 KiB, or the server's max payload less
   * 256 bytes when that is less (a larger one is refused on every try, and
   * its tasks died after their deliveries where a native worker's result too
   * large fails its task). Unknown (the read failed): 256 KiB, read again at
   * the next request.
   */
  #maxMessageBytes(): Promise<number> {
    const port = this.#port;
    if (!port.maxPayload) return Promise.resolve(maxResultsMessageBytes);
    this.#maxBytes ??= port.maxPayload().then(
      (maxPayload) => Math.min(maxResultsMessageBytes, maxPayload - 256),
      (error: unknown) => {
        this.#maxBytes = undefined;
        this.#log.warn({ err: error }, "server's max payload unknown; results batched up to 256 KB");
        return maxResultsMessageBytes;
      },
    );
    return this.#maxBytes;
  }

  /** Takes the delivery's in-flight slot in this process. */
  #open(c: ReceiptClaims, id: string, digest: string, item: ResultItem): Answering {
    let finish: (answer: RecordedAnswer | undefined) => void = () => undefined;
    const done: InFlight = new Promise((resolve) => {
      finish = resolve;
    });
    this.#inFlight.set(c.r, done);
    const answering: Answering = {
      c,
      id,
      digest,
      item,
      revision: 0,
      heldUntil: c.x,
      finish: (answer) => {
        if (this.#inFlight.get(c.r) === done) this.#inFlight.delete(c.r);
        finish(answer);
      },
      // A failed settle is thrown for the whole request; its outcome is never shown.
      outcome: done.then((answer) =>
        answering.failed ? { id, status: "expired" } : (answering.result ?? repeated(id, digest, answer)),
      ),
    };
    return answering;
  }

  /** The broker's record of each delivery decides who answers it: one claim per delivery, ever. */
  async #claim(mine: readonly Answering[], caller: Caller, failures: unknown[]): Promise<Answering[]> {
    const claimed: Answering[] = [];
    await Promise.all(
      mine.map(async (a) => {
        try {
          const claim = await this.#port.claimAnswer(a.c.r, a.digest);
          if (claim.claimed) {
            a.revision = claim.revision;
            claimed.push(a);
          } else {
            this.#book.release(caller.identity, a.c.r);
            a.finish(claim.answer);
          }
        } catch (error) {
          failures.push(error);
          a.failed = true;
          a.finish(undefined);
        }
      }),
    );
    return claimed;
  }

  /**
   * A receipt whose lease ended does nothing, but a POST retried after its
   * first try stored the answer (the response lost) finds that answer: the
   * same one is a duplicate, another a conflict. No answer recorded, one
   * still pending, or none readable: expired.
   */
  async #afterItsLease(id: string, digest: string, ref: string): Promise<ItemOutcome> {
    return (await this.#recordedOutcome(id, digest, ref)) ?? { id, status: "expired" };
  }

  /**
   * What a POST retried after its job ended (its first try answered the
   * job's last task, the response lost) is told: each item's recorded
   * answer, a duplicate or a conflict. Undefined when an item has none.
   */
  async recorded(
    jobId: string,
    items: readonly ResultItem[],
    claims: readonly ReceiptClaims[],
  ): Promise<ItemOutcome[] | undefined> {
    const outcomes = await Promise.all(
      items.map((item, n) => {
        const c = claims[n];
        return c && this.#recordedOutcome(`${jobId}.${c.i}`, answerDigest(item), c.r);
      }),
    );
    return outcomes.every((o) => o !== undefined) ? outcomes : undefined;
  }

  /** The delivery's answer recorded by an earlier request, told against this one; undefined with none (or pending). */
  async #recordedOutcome(id: string, digest: string, ref: string): Promise<ItemOutcome | undefined> {
    const first = await this.#port.answerOf(ref).catch(() => undefined);
    return first && first.status !== "pending" ? repeated(id, digest, first) : undefined;
  }

  /** Plans each claimed answer and stores its results (and dead letters); nothing is settled yet. */
  async #store(
    claimed: readonly Answering[],
    record: JobRecord,
    request: Settling,
    batcher: ResultBatcher<ReceiptDelivery>,
    maxBatchBytes: number,
  ): Promise<void> {
    const jobId = record.id;
    await Promise.all(
      claimed.map((a) => {
        const plan = planAnswer(a.c.i, handlerAnswer(a.c.i, a.item), {
          attempt: a.c.d,
          maxDeliver: record.settings.maxDeliver,
          backoffMs: record.settings.backoffMs,
          maxBatchBytes,
          // The submit its receipt was leased under: the record's submitId when it was handed out
          // (a task of another submit is not handed out), on a 1-task lane job.
          submit: answerSubmit(record, { submit: a.c.s }),
        });
        const delivery = new ReceiptDelivery(a, plan.outcome, request);
        const retryInMs = plan.outcome.kind === "nak" ? plan.outcome.delayMs : undefined;
        a.result = { id: a.id, status: delivery.status, ...(retryInMs === undefined ? {} : { retryInMs }) };
        return answerTask(jobId, plan, delivery, batcher, (error, submit) =>
          this.#port.storeDeadLetter({
            queue: record.queue,
            jobId,
            ref: a.c.r,
            index: a.c.i,
            error,
            deliveries: a.c.d,
            submit,
          }),
        );
      }),
    );
    // Results first, each message's PubAck before its tasks are acked: a task is never acked without its result.
    await batcher.flush();
  }

  /**
   * While a request's results are stored (a publish may be retried through a
   * leader election for up to 15 s), its deliveries' leases are extended on
   * the server three times per ack wait, and at once for those ending
   * within that: a lease that ran out meanwhile would hand the task to
   * another worker, whose delivery this request's ack would then end. Kept
   * for the whole request, every batch of it, until the last is stored.
   */
  #keepWhileStoring(claimed: readonly Answering[], record: JobRecord, clock: () => number): () => void {
    const now = clock();
    const { ackWaitMs } = record.settings;
    const everyMs = leaseKeepEveryMs(ackWaitMs);
    const keep = (which: readonly Answering[]) => {
      if (which.length === 0) return;
      const sentAt = clock();
      this.#port.settle(which.map((a) => ({ ref: a.c.r, action: "working" as const }))).then(
        () => {
          // Kept at the server: the queue's permit is held as long (given back at the lease's
          // first end, another task could start at the cap while this one is stored). The
          // token's slot is not: its answer is in, it hoards nothing. Told by the time the +WPI
          // is sent, as a heartbeat's: one that waited out a reconnect past the lease's end
          // kept the delivery the server had handed to another worker meanwhile, not this one.
          const until = leaseEnd(sentAt, ackWaitMs);
          const sent = clock();
          for (const a of which) {
            if (sent >= a.heldUntil) continue;
            a.heldUntil = Math.max(a.heldUntil, until);
            this.#port.limits?.extend(a.c.r, until, record.queue);
          }
        },
        (error: unknown) =>
          this.#log.debug(
            { err: error, jobId: record.id },
            "leases not extended while the results were stored",
          ),
      );
    };
    keep(claimed.filter((a) => a.c.x - now < everyMs));
    const keeper = setInterval(() => keep(claimed), everyMs);
    return () => clearInterval(keeper);
  }
}
