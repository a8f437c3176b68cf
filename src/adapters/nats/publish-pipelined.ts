import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import { createInbox, headers, type Msg, type NatsConnection, TimeoutError } from "@nats-io/transport-node";

export interface PipelinedPublish {
  readonly subject: string;
  readonly bodies: readonly string[];
  /** The `Nats-Msg-Id` of body `n`: a retried publish of the same body lands once. */
  readonly msgId: (n: number) => string;
  /** PubAcks awaited at most at once. */
  readonly window: number;
  /** Fails with a `TimeoutError` when no PubAck came for this long while some are awaited. */
  readonly ackTimeoutMs: number;
  readonly signal: AbortSignal;
}

const decoder = new TextDecoder();

/**
 * Publishes many messages to a JetStream stream, each with its message id,
 * with up to `window` PubAcks awaited at once; resolves when every one is
 * acknowledged. What `js.publish()` does per message, minus its per-request
 * machinery: one reply subscription (`<inbox>.<n>`) for the whole batch
 * instead of a request, a timer, several promises and an Error with a stack
 * trace per message, which were two thirds of a submit's client CPU
 * (bench/README.md).
 *
 * Failures are those `js.publish()` raises, so they are classified alike: a
 * PubAck error is a `JetStreamApiError`, silence a `TimeoutError` (outcome
 * unknown: the caller retries with the same ids), no responders "jetstream is
 * not enabled".
 */
export const publishPipelined = (nc: NatsConnection, p: PipelinedPublish): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    const total = p.bodies.length;
    if (total === 0) return resolve();
    const inbox = createInbox();
    const acked = new Uint8Array(total);
    let next = 0;
    let done = 0;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;

    const finish = (error?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      p.signal.removeEventListener("abort", onAbort);
      sub.unsubscribe();
      if (error === undefined) resolve();
      else reject(error);
    };
    const onAbort = () => finish(p.signal.reason);
    const armTimer = () => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(new TimeoutError()), p.ackTimeoutMs);
    };

    const onAck = (error: Error | null, msg: Msg) => {
      if (settled) return;
      if (error) return finish(error);
      const n = Number(msg.subject.slice(inbox.length + 1));
      if (!Number.isInteger(n) || n < 0 || n >= total || acked[n] === 1) return;
      if (msg.data.length === 0 && msg.headers?.code === 503)
        return finish(new JetStreamError("jetstream is not enabled"));
      let ack: { stream?: string; error?: { code: number; err_code: number; description: string } };
      try {
        ack = JSON.parse(decoder.decode(msg.data));
      } catch (parseError) {
        return finish(parseError);
      }
      if (ack.error) return finish(new JetStreamApiError(ack.error));
      if (!ack.stream) return finish(new JetStreamError("invalid ack response"));
      acked[n] = 1;
      if (++done === total) return finish();
      armTimer();
      pump();
    };

    const pump = () => {
      try {
        while (next - done < p.window) {
          const n = next;
          const body = p.bodies[n];
          if (body === undefined) break; // all published
          next++;
          const h = headers();
          h.set("Nats-Msg-Id", p.msgId(n));
          nc.publish(p.subject, body, { reply: `${inbox}.${n}`, headers: h });
        }
      } catch (error) {
        finish(error);
      }
    };

    const sub = nc.subscribe(`${inbox}.*`, { callback: onAck });
    if (p.signal.aborted) return finish(p.signal.reason);
    p.signal.addEventListener("abort", onAbort, { once: true });
    armTimer();
    pump();
  });
