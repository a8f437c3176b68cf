import { createInbox } from "@nats-io/transport-node";
import type { RuntimeCore } from "../../runtime.ts";
import type { NatsJobBroker } from "./job-broker.ts";

const nanos = (ms: number) => Math.round(ms * 1_000_000);

/**
 * Tasks leased by reference, for the HTTP pull API: a delivery is known by its
 * reply subject (a JetStream ack is a publish to it), so a signed receipt can
 * carry it and any process on the same NATS can settle it.
 */
export class NatsTaskLeasing {
  readonly #core: RuntimeCore;
  readonly #broker: NatsJobBroker;

  constructor(core: RuntimeCore, broker: NatsJobBroker) {
    this.#core = core;
    this.#broker = broker;
  }

  /** True if `reply` is a delivery of this job's tasks. */
  isDeliveryOf(reply: string, jobId: string): boolean {
    const lease = leaseInfo(reply);
    return lease?.stream === this.#broker.names.tasksStream && lease.consumer === jobId;
  }

  /** The payload of the task a delivery (by its reply subject) carries, read from the tasks stream. */
  taskPayload(reply: string): Promise<unknown> {
    const seq = leaseInfo(reply)?.streamSeq;
    if (seq === undefined)
      return Promise.reject(new Error(`taskPayload: ${JSON.stringify(reply)} is not a delivery`));
    return this.#core.run("job.tasks.payload", async (nc) => {
      const { jsm } = await this.#broker.handles(nc);
      const stored = await jsm.streams.getMessage(this.#broker.names.tasksStream, { seq });
      if (!stored) throw new Error(`task at sequence ${seq} is gone`);
      return (stored.json() as { p?: unknown }).p;
    });
  }

  /**
   * Leases up to `max` of the job's tasks and returns at once with what is
   * ready (maybe none). nats.js `fetch()` cannot do this: its `expires` is at
   * least 1 s and it waits that long whenever fewer than `max` tasks are
   * ready. A pull request with `no_wait` is answered at once: the ready
   * messages, then a 404/408 status. Not retried: a retry could lease twice
   * (harmless, the first lease just runs out, but wasteful). A missing
   * consumer does not answer at all; `timeoutMs` bounds that wait.
   */
  fetchTasks(jobId: string, max: number, timeoutMs = 2000): Promise<LeasedTask[]> {
    return this.#core.run(
      "job.tasks.fetch",
      async (nc) => {
        const inbox = createInbox();
        const sub = nc.subscribe(inbox);
        const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
        const tasks: LeasedTask[] = [];
        try {
          nc.publish(
            `$JS.API.CONSUMER.MSG.NEXT.${this.#broker.names.tasksStream}.${jobId}`,
            JSON.stringify({ batch: max, no_wait: true }),
            { reply: inbox },
          );
          for await (const m of sub) {
            const lease = m.reply ? leaseInfo(m.reply) : undefined;
            // Anything else is a status (404 no messages, 408 request done, 409 …): this pull is over.
            if (!lease) break;
            tasks.push({ reply: m.reply as string, data: m.data, deliveryCount: lease.deliveryCount });
            if (tasks.length >= max) break;
          }
        } finally {
          clearTimeout(timer);
          sub.unsubscribe();
        }
        return tasks;
      },
      { retry: { attempts: 1, initialDelayMs: 0 } },
    );
  }

  /**
   * Acks, terms, naks or extends leases by their deliveries' reply subjects (a
   * JetStream ack is a publish to it), then flushes: once this resolves the
   * server has them. Not retried: an ack lost is a redelivery, counted once;
   * an ack sent twice could reach the task's next holder.
   */
  settleLeases(settles: readonly LeaseSettle[]): Promise<void> {
    for (const s of settles) {
      if (leaseInfo(s.reply)?.stream !== this.#broker.names.tasksStream) {
        throw new Error(`settleLeases: ${JSON.stringify(s.reply)} is not a task delivery of this runtime`);
      }
    }
    return this.#core.run(
      "job.tasks.settle",
      async (nc) => {
        for (const s of settles) nc.publish(s.reply, leasePayload(s));
        await nc.flush();
      },
      { retry: { attempts: 1, initialDelayMs: 0 } },
    );
  }
}

/** One task leased by reference: settle it with `settleLeases` on its reply subject. */
export interface LeasedTask {
  readonly reply: string;
  readonly data: Uint8Array;
  readonly deliveryCount: number;
}

export type LeaseSettle =
  | { readonly reply: string; readonly action: "ack" | "term" | "working" }
  | { readonly reply: string; readonly action: "nak"; readonly delayMs: number };

const leasePayload = (s: LeaseSettle): string => {
  switch (s.action) {
    case "ack":
      return "+ACK";
    case "term":
      // No reason: nats-server 2.9 silently ignores a "+TERM <reason>" (the task comes back after ack_wait).
      return "+TERM";
    case "working":
      return "+WPI";
    case "nak":
      return s.delayMs > 0 ? `-NAK ${JSON.stringify({ delay: nanos(s.delayMs) })}` : "-NAK";
  }
};

/**
 * Stream, consumer and counts of a delivery from its reply subject:
 * `$JS.ACK.<stream>.<consumer>.<deliveries>.<streamSeq>.<deliverySeq>.<ts>.<pending>`,
 * or with `<domain>.<accountHash>` after `ACK` (and a random token at the end) on newer servers.
 */
export const leaseInfo = (
  reply: string,
): { stream: string; consumer: string; deliveryCount: number; streamSeq: number } | undefined => {
  const tokens = reply.split(".");
  if (tokens[0] !== "$JS" || tokens[1] !== "ACK") return undefined;
  if (tokens.length === 9) tokens.splice(2, 0, "_", "");
  if (tokens.length < 11) return undefined;
  const deliveryCount = Number(tokens[6]);
  const streamSeq = Number(tokens[7]);
  if (!Number.isSafeInteger(deliveryCount) || deliveryCount < 1 || !Number.isSafeInteger(streamSeq))
    return undefined;
  return { stream: tokens[4]!, consumer: tokens[5]!, deliveryCount, streamSeq };
};
