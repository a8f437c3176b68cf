import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";

/**
 * The tasks buffered in nats.js's consume loop (received, not yet yielded),
 * with when each arrived, in the order the loop yields them: its `_push`
 * (not in its types) wrapped on the instance. Undefined where the loop has
 * no such method.
 */
export class Buffered {
  readonly #times: number[] = [];
  /** Each one buffered; undefined once yielded. */
  readonly #msgs: (JsMsg | undefined)[] = [];
  #head = 0;

  static of(messages: ConsumerMessages): Buffered | undefined {
    const loop = messages as unknown as { _push?: unknown };
    const push = loop._push;
    if (typeof push !== "function") return undefined;
    const buffered = new Buffered();
    loop._push = function (this: unknown, item: unknown) {
      // A function is a refill or the loop's end, not a delivery.
      if (typeof item !== "function") {
        buffered.#times.push(Date.now());
        buffered.#msgs.push(item as JsMsg);
      }
      return push.call(this, item);
    };
    return buffered;
  }

  /** When `msg`, now yielded, arrived; NaN if it is not the one expected (not known then). */
  take(msg: JsMsg): number {
    const at = this.#head++;
    const arrived = this.#msgs[at] === msg ? (this.#times[at] as number) : Number.NaN;
    this.#msgs[at] = undefined;
    if (this.#head === this.#msgs.length) {
      this.#times.length = 0;
      this.#msgs.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#msgs.length) {
      this.#times.splice(0, this.#head);
      this.#msgs.splice(0, this.#head);
      this.#head = 0;
    }
    return arrived;
  }

  /** When the oldest task still buffered arrived. */
  oldest(): number | undefined {
    return this.#times[this.#head];
  }

  /** The tasks still buffered (the loop yields none of them after this: it ends). */
  handOver(): JsMsg[] {
    return this.#msgs.slice(this.#head).filter((m): m is JsMsg => m !== undefined);
  }
}
