/** One life of a consumer as a task loop met it: once over, its deliveries' answers are not sent. */
export interface ConsumerLife {
  readonly over: boolean;
}

/** A put-back's `wanted`, false once the delivery's consumer's life is over (its copy would come back beside it). */
export const livesOn =
  (life: ConsumerLife, wanted?: () => boolean): (() => boolean) =>
  () =>
    !life.over && (wanted?.() ?? true);

/**
 * The lives of the consumer one task loop pulls from, round after round.
 * The server knows a delivery only by the sequences in its ack subject: a
 * consumer made again under the same name (the server's store came back
 * empty, or it was deleted and made again) counts its deliveries from 1
 * again, and on a stream made again its messages too. An answer to a
 * delivery of the life before then landed on the new life's message at
 * that sequence: an ack removed a task never run, a release ran one twice
 * at once. The signs of a new life: a round meets a consumer created at
 * another time that has made fewer deliveries than the loop has seen (a
 * single nats-server 2.9 reports another creation time after a plain
 * restart, its deliveries kept), or a delivery sequence does not grow
 * (nats.js pulls again after a reconnect, from the same iterator).
 *
 * A delivery a loop's drain caught (`caught`) is of the life now.
 *
 * A consumer that lost its last deliveries (a server killed before it
 * stored them, a cluster's leader elected behind) shows the second sign
 * too: its loop's answers then go unsent, and those tasks come back at
 * their lease's end (counted once). Left open: an old delivery answered
 * before the loop has met the new life, and one whose new life has made
 * as many deliveries as the loop saw.
 */
export class ConsumerLives {
  #life = { over: false };
  /** When the consumer last met was created (undefined: none met yet). */
  #created: string | undefined;
  /** The last delivery sequence of the life now. */
  #delivered = 0;

  /** A round of the loop met its consumer, created at `created`, having made `delivered` deliveries. */
  met(created: string, delivered: number): void {
    if (this.#created !== undefined && created !== this.#created && delivered < this.#delivered) this.#next();
    this.#created = created;
  }

  /**
   * The life of a delivery of the loop's iterator, in the order it hands
   * them over (by its delivery sequence; undefined: not known, taken as the
   * life now).
   */
  of(deliverySeq: number | undefined): ConsumerLife {
    if (deliverySeq === undefined) return this.#life;
    if (deliverySeq <= this.#delivered) this.#next();
    this.#delivered = deliverySeq;
    return this.#life;
  }

  /**
   * The life of a delivery caught by a loop's drain (its worker stops, or
   * it let go of its buffer): the life now, its sequence not looked at. The
   * drain passes on what reaches it as it comes, while the iterator still
   * hands over what it buffered before, with lower sequences: looked at,
   * they ended a life that goes on (a stopping worker's running tasks then
   * sent no ack, and each ran again after its lease).
   */
  caught(): ConsumerLife {
    return this.#life;
  }

  /**
   * The consumer was found gone (a pull heard it deleted, or a look-up did
   * not find it and made it again): the life now is over, the next starts.
   */
  gone(): void {
    this.#next();
  }

  /** The consumer is gone for good (its job ended): what is left of its deliveries answers nothing. */
  end(): void {
    this.#life.over = true;
  }

  #next(): void {
    this.#life.over = true;
    this.#life = { over: false };
    this.#delivered = 0;
  }
}
