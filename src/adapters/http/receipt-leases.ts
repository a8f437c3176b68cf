import type { JobRecord } from "../../kernel/job-record.ts";
import type { Logger } from "../../kernel/logger.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import type { LeaseBook } from "./lease-book.ts";
import type { Caller, HeartbeatOutcome, ItemOutcome, LeasePort } from "./lease-port.ts";
import type { OwnLeaseEnds } from "./own-lease-ends.ts";
import { ReceiptAnswers } from "./receipt-answers.ts";
import { type ReceiptClock, receiptClock } from "./receipt-clock.ts";
import { leaseEnd, ofJobSubmit, type ReceiptClaims, type ReceiptSigner } from "./receipts.ts";
import type { ResultItem } from "./request-bodies.ts";

/** What `ReceiptLeases` works with: `TaskLeases`' own (task-leases.ts). */
interface ReceiptLeasesOptions {
  readonly port: LeasePort;
  readonly signer: ReceiptSigner;
  readonly log: Logger;
  readonly now: () => number;
  /** The monotonic clock a request's times are carried on by (receipt-clock.ts). */
  readonly monotonic: () => number;
  /** The ends of the leases this instance timed (own-lease-ends.ts). */
  readonly ownEnds: OwnLeaseEnds;
  readonly book: LeaseBook;
  /** The job's record if it may still take answers, else its 404 or 410 (`TaskLeases`' `#openRecord`). */
  readonly openRecord: (
    jobId: string,
    caller: Caller,
    claims: readonly ReceiptClaims[],
  ) => Promise<JobRecord>;
}

/**
 * The leases HTTP workers hold, through the receipts `TaskLeases` gave them:
 * each receipt checked (signed here, of the job, of the caller's token,
 * naming a delivery of the job's tasks), then its lease extended (heartbeat)
 * or answered (receipt-answers.ts: the native worker's answer path, each
 * delivery answered once).
 */
export class ReceiptLeases {
  readonly #port: LeasePort;
  readonly #signer: ReceiptSigner;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #monotonic: () => number;
  readonly #ownEnds: OwnLeaseEnds;
  readonly #book: LeaseBook;
  readonly #answers: ReceiptAnswers;
  readonly #openRecord: ReceiptLeasesOptions["openRecord"];

  constructor(options: ReceiptLeasesOptions) {
    this.#port = options.port;
    this.#signer = options.signer;
    this.#log = options.log;
    this.#now = options.now;
    this.#monotonic = options.monotonic;
    this.#ownEnds = options.ownEnds;
    this.#book = options.book;
    this.#answers = new ReceiptAnswers(options.port, options.book, options.log);
    this.#openRecord = options.openRecord;
  }

  /** Stores the results, then settles the leases; per item what became of it. */
  async submitResults(jobId: string, items: readonly ResultItem[], caller: Caller): Promise<ItemOutcome[]> {
    const field = (n: number) => `results[${n}].receipt`;
    const signed = items.map((item, n) => this.#verify(item.receipt, jobId, field(n), caller));
    const clock = await receiptClock(this.#port, this.#now, this.#monotonic);
    const claims = this.#onOurClock(signed, clock);
    let record: JobRecord;
    try {
      record = await this.#openRecord(jobId, caller, claims);
    } catch (error) {
      // Over, maybe by this request's first try (its response lost): the answers it stored are told.
      const told =
        error instanceof HttpError && error.code === ErrorCode.jobFinished
          ? await this.#answers.recorded(jobId, items, claims)
          : undefined;
      if (told) return told;
      throw error;
    }
    this.#assertDeliveries(record, claims, field);
    let outcomes: ItemOutcome[];
    try {
      outcomes = await this.#answers.submit(record, items, claims, { caller, now: clock.now });
    } catch (error) {
      // Failed part way (a settle, a dead letter's store): the deliveries it settled are answered
      // all the same (their answer recorded), and their permits go back. They were kept to each
      // lease's end, and at a limited queue's cap nothing else ran meanwhile.
      await Promise.all(
        claims.map(async (c) => {
          if ((await this.#answerState(c.r).catch(() => undefined)) === "answered")
            this.#port.limits?.end(c.r, record.queue);
        }),
      );
      throw error;
    }
    // Answered (or found answered, or expired): the lease is over, its permit goes back. Not
    // while another request still stores its answer (`pending`; an expired receipt's too, its
    // delivery kept by that request): that one gives it back.
    await Promise.all(
      claims.map(async (c, n) => {
        const o = outcomes[n];
        if (o?.status === "pending" || o?.answered === "pending") return;
        if (o?.status === "expired" && (await this.#beingAnswered(c.r))) return;
        this.#port.limits?.end(c.r, record.queue);
      }),
    );
    return outcomes;
  }

  /** Extends the leases of the receipts; each still open one gets a fresh receipt. */
  async heartbeat(jobId: string, receipts: readonly string[], caller: Caller): Promise<HeartbeatOutcome[]> {
    const field = (n: number) => `receipts[${n}]`;
    const signed = receipts.map((r, n) => this.#verify(r, jobId, field(n), caller));
    const clock = await receiptClock(this.#port, this.#now, this.#monotonic);
    const claims = this.#onOurClock(signed, clock);
    const record = await this.#openRecord(jobId, caller, claims);
    this.#assertDeliveries(record, claims, field);
    const now = clock.now();
    // A receipt of another submit of the job's key is over as one past its end: its delivery went
    // with the store, and a +WPI by its sequence would keep the new job's delivery there.
    const over = (c: ReceiptClaims, at: number) => c.x <= at || !ofJobSubmit(c, record);
    // Answered already (here or on another instance), or being answered: nothing to extend.
    const answered = await Promise.all(
      claims.map(async (c): Promise<"answering" | "answered" | undefined> => {
        if (over(c, now)) return (await this.#beingAnswered(c.r)) ? "answering" : undefined;
        return this.#answerState(c.r);
      }),
    );
    // Told by the time the +WPI is sent, and again once it is known stored: the reads above (and
    // a settle waiting out a reconnect) may outlast the lease, its task then delivered to another
    // worker, whose delivery a fresh receipt's ack would settle (JetStream answers a delivery by
    // its stream sequence). Stored by the receipt's end, it kept this delivery: extended.
    const sentAt = clock.now();
    const open = claims.filter((c, n) => !over(c, sentAt) && !answered[n]);
    if (open.length > 0) await this.#port.settle(open.map((c) => ({ ref: c.r, action: "working" })));
    const settledAt = clock.now();
    const x = leaseEnd(sentAt, record.settings.ackWaitMs);
    const leaseMs = x - settledAt;
    const outcomes = claims.map((c, n): HeartbeatOutcome => {
      const id = `${jobId}.${c.i}`;
      if (answered[n] || over(c, settledAt)) {
        // Being answered: the request storing the answer keeps the permit and gives it back.
        if (answered[n] !== "answering") this.#port.limits?.end(c.r, record.queue);
        if (!ofJobSubmit(c, record)) this.#book.release(caller.identity, c.r);
        return { id, status: answered[n] ? "settled" : "expired" };
      }
      this.#ownEnds.timed(c.r, clock.toMonotonic(x));
      const booked = this.#book.extend(caller.identity, c.r, x);
      this.#port.limits?.extend(c.r, x, record.queue, booked);
      // Signed anew as it was: a version 2 receipt names no submit, and none is known to be its.
      const receipt = this.#signer.sign({ ...c, x: clock.toReceipt(x) });
      return { id, status: "extended", receipt, leaseMs };
    });
    this.#log.debug(
      { jobId, workerId: caller.identity, extended: open.length, of: claims.length },
      "leases extended",
    );
    return outcomes;
  }

  /**
   * The claims with their ends on the request's clock (receipt-clock.ts),
   * which every lease of the request is judged by from here on: a receipt's end is on the
   * server's (receipt-clock.ts), and read as signed, an instance whose clock
   * was behind the leasing one's took it past its lease.
   */
  #onOurClock(signed: readonly ReceiptClaims[], clock: ReceiptClock): ReceiptClaims[] {
    return signed.map((c) => {
      // Timed here: its end as this instance timed it, when later (own-lease-ends.ts).
      const own = this.#ownEnds.endOf(c.r);
      const x = clock.fromReceipt(c.x);
      return { ...c, x: own === undefined ? x : Math.max(x, clock.fromMonotonic(own)) };
    });
  }

  /**
   * Where the delivery's answer is: being stored by a request (here, or on
   * another instance: its claim `pending`), stored, or none.
   */
  async #answerState(ref: string): Promise<"answering" | "answered" | undefined> {
    if (this.#answers.answering(ref)) return "answering";
    const found = await this.#port.answerOf(ref);
    return found === undefined ? undefined : found.status === "pending" ? "answering" : "answered";
  }

  /** Whether a request is storing the delivery's answer; an unreadable answer counts as none. */
  async #beingAnswered(ref: string): Promise<boolean> {
    return (await this.#answerState(ref).catch(() => undefined)) === "answering";
  }

  #verify(receipt: string, jobId: string, field: string, caller: Caller): ReceiptClaims {
    const claims = this.#signer.verify(receipt);
    if (!claims) throw invalidReceipt(field);
    if (claims.j !== jobId) {
      throw new HttpError(400, ErrorCode.receiptWrongJob, `${field}: the receipt belongs to another job`, {
        field,
      });
    }
    if (claims.w !== caller.identity) {
      throw new HttpError(
        403,
        ErrorCode.receiptNotYours,
        `${field}: the receipt was leased by another worker identity; only its tokens may answer it`,
        { field },
      );
    }
    return claims;
  }

  /**
   * Each receipt names a delivery of the job's tasks, on its queue's tasks
   * (checked once the record says which queue, and whether the job is on the
   * lane: the receipt does not carry it). Not one of another submit of the
   * job's key (`ofJobSubmit`): that submit may have been on the lane and the
   * record's not (or the other way), and such a receipt is a lease that is
   * over, nothing sent for it, not an error refusing the request's others.
   */
  #assertDeliveries(record: JobRecord, claims: readonly ReceiptClaims[], field: (n: number) => string): void {
    for (const [n, c] of claims.entries()) {
      if (ofJobSubmit(c, record) && !this.#port.isDeliveryOf(c.r, record)) throw invalidReceipt(field(n));
    }
  }
}

const invalidReceipt = (field: string) =>
  new HttpError(400, ErrorCode.invalidReceipt, `${field}: not a receipt issued by this service`, { field });
