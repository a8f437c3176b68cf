import { headers } from "@nats-io/transport-node";
import type { PubAcks } from "./pub-acks.ts";

export interface PipelinedPublish {
  readonly subject: string;
  readonly bodies: readonly string[];
  /** The `Nats-Msg-Id` of body `n`: a retried publish of the same body lands once. */
  readonly msgId: (n: number) => string;
  /** PubAcks awaited at most at once. */
  readonly window: number;
  readonly signal: AbortSignal;
}

/**
 * Publishes many messages to a JetStream stream, each with its message id,
 * with up to `window` PubAcks awaited at once; resolves when every one is
 * acknowledged. What `js.publish()` does per message, minus its per-request
 * machinery: the client's one reply subscription for PubAcks (`PubAcks`)
 * instead of a request, a timer, several promises and an error object per
 * message, which were two thirds of a submit's client CPU (bench/README.md).
 * (It made a reply subscription per batch before, a subscribe and an
 * unsubscribe the server handles for every submit, even of one task.)
 *
 * Failures are those `js.publish()` raises, so they are classified alike
 * (`pub-acks.ts`): a PubAck error, silence past the PubAck timeout (outcome
 * unknown: the caller retries with the same ids), no stream listening.
 */
export const publishPipelined = (acks: PubAcks, p: PipelinedPublish): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    const total = p.bodies.length;
    if (total === 0) return resolve();
    let next = 0;
    let done = 0;
    let settled = false;

    const finish = (error?: unknown) => {
      if (settled) return;
      settled = true;
      p.signal.removeEventListener("abort", onAbort);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onAbort = () => finish(p.signal.reason);

    const onAck = (error: unknown) => {
      if (settled) return;
      if (error !== undefined) return finish(error);
      if (++done === total) return finish();
      pump();
    };

    const pump = () => {
      while (!settled && next - done < p.window) {
        const n = next;
        const body = p.bodies[n];
        if (body === undefined) break; // all published
        next++;
        const h = headers();
        h.set("Nats-Msg-Id", p.msgId(n));
        acks.send(p.subject, body, h, onAck);
      }
    };

    if (p.signal.aborted) return finish(p.signal.reason);
    p.signal.addEventListener("abort", onAbort, { once: true });
    pump();
  });
