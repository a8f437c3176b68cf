/**
 * BullMQ, the peer users compare jetstate with, on the Redis of `REDIS_URL`
 * (else 127.0.0.1:6379): only on loopback, and only when it answers. Its
 * server's CPU is redis-server's, read from /proc as nats-server's is.
 */
import { readdirSync, readFileSync } from "node:fs";
import type { Queue } from "bullmq";
import { pidCpuClock } from "./server.ts";
import type { CpuClock } from "./throughput.ts";

/** ioredis options of the loopback Redis, or undefined when `REDIS_URL` names another host. */
const redisConnection = () => {
  const redis = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
  if (!["127.0.0.1", "localhost", "[::1]"].includes(redis.hostname)) return undefined;
  return { host: redis.hostname, port: Number(redis.port || 6379), maxRetriesPerRequest: null };
};

export type RedisConnection = NonNullable<ReturnType<typeof redisConnection>>;

/**
 * A BullMQ queue named `name`, ready, with its connection; undefined when no
 * Redis answers within a second (the queue is closed then).
 */
export const bullmqQueue = async (
  name: string,
): Promise<{ queue: Queue; connection: RedisConnection } | undefined> => {
  const connection = redisConnection();
  if (!connection) return undefined;
  const { Queue } = await import("bullmq");
  const queue = new Queue(name, { connection });
  try {
    await Promise.race([
      queue.waitUntilReady(),
      new Promise((_, reject) => setTimeout(() => reject(new Error("no Redis")), 1000)),
    ]);
    return { queue, connection };
  } catch {
    await queue.close();
    return undefined;
  }
};

/** redis-server's CPU clock (µs): the process listening on the connection's port, found by its command line. */
export const redisCpuClock = (connection: RedisConnection): CpuClock => {
  try {
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      if (cmdline.includes("redis-server") && cmdline.includes(`:${connection.port}`))
        return pidCpuClock(Number(entry));
    }
  } catch {
    // Not Linux, or /proc unreadable: no server CPU for BullMQ.
  }
  return undefined;
};
