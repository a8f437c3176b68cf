import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import type { QueueStats, QueueStatsQuery } from "../broker-admin.ts";
import { queueOfStream } from "../names.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { isNotFound, streamNamesStartingWith } from "./streams.ts";
import { nextOnSubject } from "./subject-messages.ts";

/** Message lookups per queue for the oldest waiting task: a scrape must stay cheap with thousands of jobs. */
const maxLookups = 32;
/** Read once: a scrape that fails is reported as such, the next scrape reads again. */
const once = { attempts: 1, initialDelayMs: 0 };

/**
 * Each queue's waiting tasks, from its tasks stream's consumers (every job's
 * and the lane): the sum of their `num_pending`, and the oldest message not
 * yet delivered, found with one `next_by_subj` lookup per consumer from the
 * sequence after the last it delivered. Consumers are looked up from the
 * lowest such sequence up, and the search stops at the first one whose
 * lower bound is past the oldest found (stream order is time order), or
 * after `maxLookups`; then the age is that of the oldest found, a lower bound.
 */
export const natsQueueStats = (js: NatsJobBroker, query: QueueStatsQuery): Promise<QueueStats[]> =>
  js.run(
    "queue.stats",
    async (nc) => {
      const { jsm } = await js.handles(nc);
      const namePrefix = js.names.tasksStreamPrefix;
      const streams = query.queues
        ? query.queues.map((queue) => js.names.tasksStream(queue))
        : await streamNamesStartingWith(jsm, namePrefix);
      const stats: QueueStats[] = [];
      for (const stream of streams) {
        const queue = queueOfStream(stream, namePrefix);
        if (queue !== undefined) stats.push(await statsOf(jsm, stream, queue));
      }
      return stats;
    },
    { timeoutMs: query.timeoutMs, retry: once },
  );

const statsOf = async (jsm: JetStreamManager, stream: string, queue: string): Promise<QueueStats> => {
  let waiting = 0;
  const pending: Array<{ filter: string; from: number }> = [];
  try {
    for await (const consumer of jsm.consumers.list(stream)) {
      const filter = consumer.config.filter_subject;
      if (consumer.num_pending === 0 || filter === undefined) continue;
      waiting += consumer.num_pending;
      pending.push({ filter, from: consumer.delivered.stream_seq + 1 });
    }
  } catch (error) {
    // A queue named by the caller that has no stream (yet): nothing waits on it.
    if (isNotFound(error)) return { queue, waiting: 0, oldestWaitingAt: undefined };
    throw error;
  }
  pending.sort((a, b) => a.from - b.from);
  let oldest: StoredMsg | undefined;
  for (const { filter, from } of pending.slice(0, maxLookups)) {
    if (oldest && from > oldest.seq) break;
    const next = await nextOnSubject(jsm, stream, filter, from);
    if (next && (!oldest || next.seq < oldest.seq)) oldest = next;
  }
  return { queue, waiting, oldestWaitingAt: oldest?.time.getTime() };
};
