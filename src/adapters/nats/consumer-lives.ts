/** One life of a consumer as a task loop met it: once over, its deliveries' answers are not sent. */
export interface ConsumerLife {
  readonly over: boolean;
}

/**
 * The lives of the consumer one task loop pulls from, round after round.
 * The server knows a delivery only by the sequences in its ack subject: a
 * consumer made again under the same name (the server's store came back
 * empty, or it was deleted and made again) counts its deliveries from 1
 * again, and on a stream made again its messages too. An answer to a
 * delivery of the life before then landed on the new life's message at
 * that sequence: an ack removed a task never run, a release ran one twice
 * at once. A loop's delivery of the new life ends the life before: each
 * round reads when its consumer was created (a round of a new life), and a
 * delivery sequence that does not grow shows a life that began under the
 * round (nats.js pulls again on a reconnect, from the same iterator).
 *
 * Left open: an old delivery answered before the loop has met the new life
 * (its worker let go of it as it heard the job made again, say), once other
 * workers took the new life's first deliveries.
 */
export class ConsumerLives {
  #life = { over: false };
  /** When the consumer of the life now was created (undefined: not known, a life met by its deliveries). */
  #created: string | undefined;
  /** The last delivery sequence of the life now. */
  #delivered = 0;

  /** A round of the loop met its consumer, created at `created`. */
  met(created: string): void {
    if (this.#created !== undefined && created !== this.#created) this.#next();
    this.#created = created;
  }

  /** The life of a delivery (by its delivery sequence; undefined: not known, taken as the life now). */
  of(deliverySeq: number | undefined): ConsumerLife {
    if (deliverySeq === undefined) return this.#life;
    if (deliverySeq <= this.#delivered) {
      this.#next();
      this.#created = undefined;
    }
    this.#delivered = deliverySeq;
    return this.#life;
  }

  /** The consumer is gone for good (its job ended): what is left of its deliveries answers nothing. */
  end(): void {
    this.#life.over = true;
  }

  #next(): void {
    this.#life.over = true;
    this.#life = { over: false };
  }
}
