import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { JobRecord } from "../../kernel/job-record.ts";

/**
 * A receipt is what an HTTP worker holds for one leased task: the broker's
 * reference to the delivery (on NATS its reply subject: acking is a publish
 * to it), the job and task it belongs to, the delivery number, the identity
 * of the token that leased it and when the lease ends. It is signed, so a
 * worker can neither forge one, nor point it at another job's message, nor
 * use another token's; and it carries its expiry, so a holder whose lease ran
 * out cannot ack the delivery of the task's next holder (JetStream acks by
 * stream sequence, whoever holds the delivery now). A delivery answered once
 * is refused after that by the answer the broker keeps (receipt-leases.ts).
 * It names the submit of the job it was leased from (`ofJobSubmit`): after
 * the server's store came back empty and the job's key was submitted again,
 * the job id is another job's (`madeAgain`), whose consumer counts its
 * sequences from 1 again, and the old delivery's ack would end the new
 * job's delivery at that sequence.
 *
 * Format: base64url(JSON claims) "." base64url(HMAC-SHA256(secret, first part)).
 */
export interface ReceiptClaims {
  /**
   * Format version: 3 names the job's submit (`s`); 2, without it, is taken
   * for the record's submit for the rest of its life (at most 20 h,
   * `ofJobSubmit`); version 1 receipts are refused.
   */
  readonly v: 2 | 3;
  /** The submit of the job it was leased from (its record's `submitId`); version 3 on. */
  readonly s?: string;
  /** Job id. */
  readonly j: string;
  /** Task index within the job. */
  readonly i: number;
  /** The broker's reference to the delivery (NATS: its reply subject `$JS.ACK.…`). */
  readonly r: string;
  /** Identity of the token that leased it: only tokens of that identity may answer or heartbeat it (within their queues). */
  readonly w: string;
  /** Delivery number, from 1. */
  readonly d: number;
  /**
   * Lease end, ms since the epoch on the server's clock, as the instance that
   * signed it read that clock (receipt-clock.ts): any instance judges it by
   * its own reading, whatever the API hosts' clocks say, and however they
   * step (during a request too). Not whatever the server's says: the
   * readings must be of clocks that agree (a cluster's nodes'; a step of
   * the server host's is seen once the reading is taken again). Signed
   * before, on that instance's own clock: the same while the clocks agree.
   */
  readonly x: number;
}

const maxReceiptLength = 1024;

export class ReceiptSigner {
  readonly #key: Buffer;

  /** `secret`: shared by every API instance that must accept the others' receipts; random if not given. */
  constructor(secret?: string | Uint8Array) {
    this.#key = secret === undefined ? randomBytes(32) : Buffer.from(secret);
  }

  sign(claims: ReceiptClaims): string {
    const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
    return `${body}.${this.#mac(body).toString("base64url")}`;
  }

  /**
   * The claims of an authentic receipt; undefined for anything else (forged,
   * damaged, not a receipt). The signature is compared in constant time.
   */
  verify(receipt: unknown): ReceiptClaims | undefined {
    if (typeof receipt !== "string" || receipt.length > maxReceiptLength) return undefined;
    const dot = receipt.indexOf(".");
    if (dot <= 0 || dot !== receipt.lastIndexOf(".")) return undefined;
    const body = receipt.slice(0, dot);
    // Compared as text: base64 decoding skips stray characters, and one receipt must have one spelling.
    const given = Buffer.from(receipt.slice(dot + 1));
    const expected = Buffer.from(this.#mac(body).toString("base64url"));
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    try {
      const claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Partial<ReceiptClaims>;
      return isClaims(claims) ? claims : undefined;
    } catch {
      // Signed by us but not readable (a format of another version): not a receipt we honour.
      return undefined;
    }
  }

  #mac(body: string): Buffer {
    return createHmac("sha256", this.#key).update(body).digest();
  }
}

const isClaims = (c: Partial<ReceiptClaims> | null): c is ReceiptClaims =>
  typeof c === "object" &&
  c !== null &&
  (c.v === 3 ? typeof c.s === "string" : c.v === 2 && c.s === undefined) &&
  typeof c.j === "string" &&
  Number.isSafeInteger(c.i) &&
  (c.i as number) >= 0 &&
  typeof c.r === "string" &&
  typeof c.w === "string" &&
  Number.isSafeInteger(c.d) &&
  (c.d as number) >= 1 &&
  Number.isSafeInteger(c.x);

/**
 * Longest lease one receipt carries: below the time the broker keeps a
 * delivery's answer (24 h), so an answered receipt is refused for as long as
 * it is valid. A longer ack wait is held by heartbeats, each renewing it.
 */
const maxReceiptLeaseMs = 20 * 3600_000;

/**
 * Our lease ends a little before the server's: we start counting when the
 * pull request leaves (before the server delivers), and take off a margin
 * for the time an ack needs to arrive. A receipt is refused once it passes,
 * so its holder can never ack the delivery of the task's next holder.
 */
const leaseMargin = (ackWaitMs: number) => Math.min(2000, Math.ceil(ackWaitMs / 10));
export const leaseEnd = (startedAt: number, ackWaitMs: number) =>
  startedAt + Math.min(ackWaitMs - leaseMargin(ackWaitMs), maxReceiptLeaseMs);

/**
 * Whether the receipt was leased from the job as its record has it now, not
 * from another submit of its key (`madeAgain`: the store came back empty and
 * the key was submitted again; its delivery is gone, its ack subject names
 * the new job's consumer). Version 3 names its submit. Version 2, issued
 * before receipts did (valid for at most 20 h after an upgrade), names none
 * and is taken for the record's, as before: told by when it was leased
 * instead, legitimate ones were refused (a lane pull sent before its job's
 * record was made, its lease timed from the pull) and stale ones taken (the
 * key submitted again with a shorter ack wait), both found by a review.
 */
export const ofJobSubmit = (c: ReceiptClaims, record: Pick<JobRecord, "submitId">): boolean =>
  c.v !== 3 || c.s === record.submitId;

/**
 * A settle's bound on the wall clock (`TaskLeasing.settle`'s `notAfter`): the earliest of the
 * leases' ends (`untils`), known on the API's clock, whose time is `now`.
 */
export const notAfterOf = (untils: readonly number[], now: number): number =>
  Date.now() + Math.min(...untils) - now;
