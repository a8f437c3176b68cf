import type { QueueStats, QueueStatsQuery } from "../broker-admin.ts";
import type { MemoryServerState } from "./memory-server.ts";

/**
 * Each queue's waiting tasks on the memory server, as `natsQueueStats` reads
 * them on NATS: tasks never delivered by the queue's consumers (every job's
 * and its lane), and the oldest of them. One stream holds every queue's
 * tasks here; a consumer's queue is the third token of its filter
 * (`<prefix>.tasks.<queue>.…`). Without `queues`, every queue that ever had
 * a task or a consumer, as NATS keeps a queue's tasks stream.
 */
export const memoryQueueStats = (server: MemoryServerState, query: QueueStatsQuery): QueueStats[] => {
  const byQueue = new Map<string, { waiting: number; oldestSeq: number; oldestAt: number | undefined }>();
  for (const queue of query.queues ?? server.tasks.queues)
    byQueue.set(queue, { waiting: 0, oldestSeq: Number.POSITIVE_INFINITY, oldestAt: undefined });
  for (const consumer of server.tasks.consumers()) {
    const queue = consumer.subject.split(".")[2];
    const stats = queue === undefined ? undefined : byQueue.get(queue);
    if (!stats) continue;
    const { count, first } = consumer.pending();
    stats.waiting += count;
    if (first && first.seq < stats.oldestSeq) {
      stats.oldestSeq = first.seq;
      stats.oldestAt = first.at;
    }
  }
  return [...byQueue].map(([queue, { waiting, oldestAt }]) => ({
    queue,
    waiting,
    oldestWaitingAt: oldestAt,
  }));
};
