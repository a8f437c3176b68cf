import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import {
  ClosedConnectionError,
  createInbox,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  PermissionViolationError,
  TimeoutError,
} from "@nats-io/transport-node";

/** What a stream answered a publish with. */
export interface PubAck {
  readonly stream: string;
  readonly seq: number;
  readonly duplicate: boolean;
}

const decoder = new TextDecoder();

/**
 * A PubAck as `js.publish()` reads it, or the error it raises for it: a
 * stream's refusal is a `JetStreamApiError`; no stream listening (a status
 * 503: JetStream not up yet, or the stream gone) an error named
 * `JetStreamNotEnabled` as nats.js names it (the class is not exported), so
 * both are classified alike (`classify-error.ts`, `client-setups.ts`).
 */
const readPubAck = (msg: Msg): PubAck | Error => {
  const ack = readApiAnswer<{ stream?: string; seq?: number; duplicate?: boolean }>(msg);
  if (ack instanceof Error) return ack;
  if (!ack.stream || ack.seq === undefined) return new JetStreamError("invalid ack response");
  return { stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate === true };
};

/** A JetStream answer's JSON (a PubAck, an API response), or the error it says, as nats.js raises it. */
const readApiAnswer = <T>(msg: Msg): T | Error => {
  if (msg.data.length === 0 && msg.headers?.code === 503)
    return Object.assign(new JetStreamError("jetstream is not enabled"), { name: "JetStreamNotEnabled" });
  let answer: T & { error?: { code: number; err_code: number; description: string } };
  try {
    answer = JSON.parse(decoder.decode(msg.data));
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
  return answer.error ? new JetStreamApiError(answer.error) : answer;
};

/** Called once with the PubAck, or with why there is none. */
export type OnPubAck = (error: unknown, ack?: PubAck) => void;

interface Waiter {
  /** Called with the PubAck, or with why there is none; with neither when `read` took the answer. */
  readonly done: OnPubAck;
  /** Reads the answer itself: an API request's, not a PubAck. */
  readonly read?: (msg: Msg) => void;
  readonly until: number;
  /** Where it was published: the server names it when it refuses the publish. */
  readonly subject: string;
}

/** How often the waiters past their time are failed: a PubAck's timeout is late by at most this. */
const sweepEveryMs = 250;

/**
 * The PubAcks of one client's JetStream publishes, on one reply
 * subscription (`<inbox>.<n>`) for all of them. `js.publish()` makes a
 * request each: an entry in the client's request mux, a timer, several
 * promises, and an error object made with its stack when the request ends
 * even when it was answered (nats.js `RequestOne.cancel`): ~4 % of a small
 * job's CPU, six publishes a job. Here a publish is a map entry; one timer
 * per client fails those past their time, with the `TimeoutError` nats.js
 * raises; the client's close fails the rest. A publish the server refuses
 * (`-ERR 'Permissions Violation for Publish to "<subject>"'`, which comes on
 * the client's status, not as an answer) fails at once with that error, as
 * nats.js fails a request to the subject: the waiters on the subject named.
 * An error of the reply subscription itself ends this instance (`broken`):
 * its owner makes another, as nats.js makes its request mux again.
 */
export class PubAcks {
  readonly #nc: NatsConnection;
  readonly #timeoutMs: number;
  readonly #inbox: string;
  readonly #waiting = new Map<number, Waiter>();
  #next = 0;
  #sweeper: NodeJS.Timeout | undefined;
  #closed: unknown;

  constructor(nc: NatsConnection, timeoutMs: number) {
    this.#nc = nc;
    this.#timeoutMs = timeoutMs;
    this.#inbox = createInbox();
    nc.subscribe(`${this.#inbox}.*`, {
      // An error here ends the subscription (a permission refused): every publish after fails with it.
      callback: (error, msg) => (error ? this.#failAll(error) : this.#answer(msg)),
    });
    void nc.closed().then(() => this.#failAll(new ClosedConnectionError()));
    void this.#refusals(nc);
  }

  /** The reply subscription failed (not the client's close): publish through another. */
  get broken(): boolean {
    return this.#closed !== undefined && !(this.#closed instanceof ClosedConnectionError);
  }

  /** Fails at once the waiters whose publish the server refused; ends with the client. */
  async #refusals(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (this.#closed !== undefined) return;
      if (status.type !== "error") continue;
      const error = status.error;
      if (!(error instanceof PermissionViolationError) || error.operation !== "publish") continue;
      for (const [n, waiter] of this.#waiting) {
        if (waiter.subject !== error.subject) continue;
        this.#waiting.delete(n);
        waiter.done(error);
      }
    }
  }

  /** Publishes `body` to `subject` with `headers`; resolves with the stream's PubAck. */
  publish(subject: string, body: string | Uint8Array, headers?: MsgHdrs): Promise<PubAck> {
    return new Promise<PubAck>((resolve, reject) =>
      this.send(subject, body, headers, (error, ack) => (ack ? resolve(ack) : reject(error))),
    );
  }

  /** As `publish`, with a callback: no promise per message (a submit of 20,000 tasks sends 20,000). */
  send(subject: string, body: string | Uint8Array, headers: MsgHdrs | undefined, done: OnPubAck): void {
    this.#send(subject, body, headers, done);
  }

  /**
   * A JetStream API request (`$JS.API.…`) on the same reply subscription:
   * resolves with the answer's JSON, or fails with the error it says
   * (`JetStreamApiError`), as `jsm` would, without a request of the client's
   * (a lease's release, one a job, is a stream purge).
   */
  request<T>(subject: string, body: unknown): Promise<T> {
    return new Promise<T>((resolve, reject) =>
      this.#send(subject, JSON.stringify(body), undefined, reject, (msg) => {
        const answer = readApiAnswer<T>(msg);
        if (answer instanceof Error) reject(answer);
        else resolve(answer);
      }),
    );
  }

  #send(
    subject: string,
    body: string | Uint8Array,
    headers: MsgHdrs | undefined,
    done: OnPubAck,
    read?: (msg: Msg) => void,
  ): void {
    if (this.#closed !== undefined) {
      done(this.#closed);
      return;
    }
    const n = this.#next++;
    this.#waiting.set(n, { done, until: Date.now() + this.#timeoutMs, subject, ...(read ? { read } : {}) });
    try {
      // A string body as a Buffer: nats.js encodes a string with `TextEncoder`, a new ArrayBuffer
      // each (~0.5 µs for a 450-byte record, and more for the GC); `Buffer.from` writes into
      // Node's pool. nats.js takes any Uint8Array as it is.
      const data = typeof body === "string" ? Buffer.from(body) : body;
      this.#nc.publish(subject, data, { reply: `${this.#inbox}.${n}`, ...(headers ? { headers } : {}) });
    } catch (error) {
      this.#waiting.delete(n);
      done(error);
      return;
    }
    if (this.#sweeper === undefined) {
      this.#sweeper = setInterval(() => this.#sweep(), sweepEveryMs);
      this.#sweeper.unref();
    }
  }

  #answer(msg: Msg): void {
    const n = Number(msg.subject.slice(this.#inbox.length + 1));
    const waiter = this.#waiting.get(n);
    if (!waiter) return; // timed out already, or not ours
    this.#waiting.delete(n);
    if (waiter.read) {
      waiter.read(msg);
      return;
    }
    const ack = readPubAck(msg);
    if (ack instanceof Error) waiter.done(ack);
    else waiter.done(undefined, ack);
  }

  #sweep(): void {
    const now = Date.now();
    for (const [n, waiter] of this.#waiting) {
      if (waiter.until > now) continue;
      this.#waiting.delete(n);
      waiter.done(new TimeoutError());
    }
    if (this.#waiting.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  #failAll(error: unknown): void {
    this.#closed ??= error;
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const waiter of waiting) waiter.done(error);
  }
}
