import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { brokerNames } from "../../src/adapters/names.ts";

/**
 * A consumer of a queue's tasks stream (a job's own, named by its id, or
 * the lane) as the server counts its deliveries not answered yet, read
 * through a nats.js client of the test's own, not through jetstate.
 */
export const unansweredDeliveries = async (
  servers: string,
  queue: string,
  consumer: string,
  prefix = "jetstate",
): Promise<number> => {
  const nc = await connect({ servers, name: "raw-consumer" });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.consumers.info(brokerNames(prefix).tasksStream(queue), consumer)).num_ack_pending;
  } finally {
    await nc.close();
  }
};

/**
 * The "working" acks (`+WPI`: the delivery's lease extended) sent for a
 * queue's tasks, counted per consumer and per task message (its stream
 * sequence), as they pass on the server: a subscription of the test's own
 * to the tasks stream's ack subjects. `close()` ends it.
 */
export const keepAlives = async (servers: string, queue: string, prefix = "jetstate") => {
  const nc = await connect({ servers, name: "raw-keep-alives" });
  const stream = brokerNames(prefix).tasksStream(queue);
  const bySeq = new Map<string, Map<number, number>>();
  const firstAt = new Map<string, number>();
  const lastAt = new Map<string, number>();
  const sub = nc.subscribe(`$JS.ACK.${stream}.>`, {
    callback: (_error, m) => {
      if (m.string() !== "+WPI") return;
      // $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
      const tokens = m.subject.split(".");
      const consumer = tokens[3] ?? "";
      const seq = Number(tokens[5]);
      const seqs = bySeq.get(consumer) ?? new Map<number, number>();
      seqs.set(seq, (seqs.get(seq) ?? 0) + 1);
      bySeq.set(consumer, seqs);
      if (!firstAt.has(consumer)) firstAt.set(consumer, Date.now());
      lastAt.set(consumer, Date.now());
    },
  });
  await nc.flush();
  return {
    /** Working acks sent for the consumer's deliveries, all told. */
    count: (consumer: string) => [...(bySeq.get(consumer)?.values() ?? [])].reduce((a, b) => a + b, 0),
    /** Milliseconds from the consumer's first working ack to its last: how long leases were kept. */
    span: (consumer: string) => (lastAt.get(consumer) ?? 0) - (firstAt.get(consumer) ?? 0),
    /** Task messages of the consumer with at least one working ack. */
    tasks: (consumer: string) => bySeq.get(consumer)?.size ?? 0,
    close: async () => {
      sub.unsubscribe();
      await nc.close();
    },
  };
};

/**
 * Every publish to the queue's tasks stream's ack subjects (+ACK, -NAK,
 * +WPI, +TERM), whoever sends it, heard on `nc` (the test's own client);
 * each as `show` tells it (its body by default).
 */
export const ackSubjects = async (
  nc: NatsConnection,
  queue: string,
  show: (m: Msg) => string = (m) => m.string(),
) => {
  const seen: string[] = [];
  const sub = nc.subscribe(`$JS.ACK.${brokerNames("jetstate").tasksStream(queue)}.>`, {
    callback: (_error, m) => {
      seen.push(show(m));
    },
  });
  await nc.flush();
  return { seen, stop: () => sub.unsubscribe() };
};
