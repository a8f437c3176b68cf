import type { Msg } from "@nats-io/transport-node";
import { jobIdOfSubject } from "../../kernel/cleanup-plan.ts";
import type { LaneLease, TaskLease } from "../task-queue.ts";
import { leaseInfo } from "./ack-subjects.ts";
import { type ConsumerLife, livesOn } from "./consumer-lives.ts";
import { closedLoopDelay } from "./pull-loops.ts";
import { putBackCopy, type Republish } from "./put-back.ts";
import { nanos } from "./streams.ts";

const decoder = new TextDecoder();

/**
 * A delivery that reached a task loop while it was drained (its worker
 * stops: `drainOnStop`), seen as a plain message: its ack subject says its
 * delivery count and sequence, and ack / nak / term / working are answers
 * to it, as nats.js's own message sends them (the first that settles it
 * only); once its consumer's life is over (`ConsumerLives`), only
 * `working`, as `JsTaskLease`.
 */
export class LateTaskLease implements TaskLease {
  readonly #msg: Msg;
  readonly #republish: Republish;
  readonly #life: ConsumerLife;
  readonly deliveryCount: number;
  readonly seq: number;
  /** When it reached the draining loop: that loop closed then, within a round trip. */
  readonly #caught = Date.now();
  constructor(msg: Msg, republish: Republish, life: ConsumerLife) {
    this.#msg = msg;
    this.#republish = republish;
    this.#life = life;
    const info = leaseInfo(msg.reply ?? "");
    // Not an ack subject (none is sent to a task loop): taken as a first delivery.
    this.deliveryCount = info?.deliveryCount ?? 1;
    this.seq = info?.streamSeq ?? 0;
  }
  get body(): string {
    return decoder.decode(this.#msg.data);
  }
  ack(): void {
    this.#answer("+ACK");
  }
  /** Not redelivered before its loop's pull requests are gone, as every task of a closed loop. */
  nak(delayMs?: number): void {
    const delay = closedLoopDelay(this.#caught, delayMs);
    this.#answer(delay > 0 ? `-NAK ${JSON.stringify({ delay: nanos(delay) })}` : "-NAK");
  }
  handBack(delayMs?: number): void {
    this.nak(delayMs);
  }
  term(): void {
    this.#answer("+TERM");
  }
  working(): void {
    this.#answer("+WPI");
  }
  putBack(keepEveryMs: number, wanted?: () => boolean): Promise<boolean> {
    const { subject, data } = this.#msg;
    return putBackCopy(
      this,
      subject,
      data,
      this.#caught,
      keepEveryMs,
      this.#republish,
      livesOn(this.#life, wanted),
    );
  }

  #settled = false;
  /** As nats.js's message: after an ack, a nak or a term, nothing more is sent. */
  #answer(payload: string): void {
    if (this.#settled || (this.#life.over && payload !== "+WPI")) return;
    this.#settled = payload !== "+WPI";
    this.#msg.respond(payload);
  }
}

/** A late delivery from a queue's lane: its job is the last token of its subject. */
export class LateLaneLease extends LateTaskLease implements LaneLease {
  readonly jobId: string;
  constructor(msg: Msg, republish: Republish, life: ConsumerLife) {
    super(msg, republish, life);
    this.jobId = jobIdOfSubject(msg.subject);
  }
}
