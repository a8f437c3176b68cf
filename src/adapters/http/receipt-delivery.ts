import type { Delivery } from "../../effects/answer-task.ts";
import type { TaskOutcome } from "../../kernel/task-outcome.ts";
import type { AnswerStatus, LeaseSettle, RecordedAnswer } from "../broker.ts";
import type { ItemOutcome } from "./lease-port.ts";
import type { ReceiptClaims } from "./receipts.ts";
import type { ResultItem } from "./request-bodies.ts";

/** One item this request answers (it holds the delivery's in-flight slot). */
export interface Answering {
  readonly c: ReceiptClaims;
  readonly id: string;
  readonly digest: string;
  readonly item: ResultItem;
  revision: number;
  /**
   * Until when the server holds the delivery for this request, as far as it
   * is known here: the receipt's end, then each keep (+WPI) it heard.
   */
  heldUntil: number;
  /** Set once this request settled the delivery itself. */
  result?: ItemOutcome;
  /** Claiming or settling it failed: the request fails (and the holder may try again). */
  failed?: boolean;
  finish(answer: RecordedAnswer | undefined): void;
  readonly outcome: Promise<ItemOutcome>;
}

/** What one request's deliveries came to once their results were stored (or not). */
export interface Settling {
  readonly stored: ReceiptDelivery[];
  readonly retries: ReceiptDelivery[];
  readonly failures: unknown[];
  /** Claims given back (`unsettled`): the request answers once they are, so its retry can claim again. */
  readonly releases: Promise<void>[];
  unsettled(a: Answering): void;
  /** Settled: told to the port (the metrics), once per delivery. */
  answered(delivery: ReceiptDelivery): void;
}

const statusOf: Record<TaskOutcome["kind"], AnswerStatus> = {
  ack: "done",
  term: "failed",
  dead: "dead",
  nak: "retry",
  failover: "retry",
};

/** A delivery answered through a receipt: its settle is sent by reference once the request's results are stored. */
export class ReceiptDelivery implements Delivery {
  readonly a: Answering;
  readonly status: AnswerStatus;
  readonly #request: Settling;
  settle: LeaseSettle;
  constructor(a: Answering, outcome: TaskOutcome, request: Settling) {
    this.a = a;
    this.status = statusOf[outcome.kind];
    this.#request = request;
    this.settle = { ref: a.c.r, action: outcome.kind === "ack" ? "ack" : "term" };
  }
  /** Its results are stored; it is counted (`answered`) once its settle is sent. */
  stored(): void {
    this.#request.stored.push(this);
  }
  lost(): void {
    this.#request.unsettled(this.a);
  }
  retry(delayMs: number): void {
    this.settle = { ref: this.a.c.r, action: "nak", delayMs };
    this.#request.retries.push(this);
  }
  deadLetterLost(error: unknown): void {
    // Not answered: its lease runs out and the MAX_DELIVERIES advisory path takes it.
    this.#request.failures.push(error);
    this.#request.unsettled(this.a);
  }
}
