/**
 * BullMQ, the peer users compare jetstate with, on the Redis of `REDIS_URL`
 * (else 127.0.0.1:6379): only on loopback, and only when it answers. Its
 * server's CPU is redis-server's, read from /proc as nats-server's is.
 */
import { readFileSync } from "node:fs";
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

/**
 * redis-server's CPU clock (µs): the process Redis names itself (`INFO
 * server`, `process_id`), read from /proc when that process is a
 * redis-server here; undefined otherwise (another host's or a container's
 * pid, not Linux).
 */
export const redisCpuClock = async (connection: RedisConnection): Promise<CpuClock> => {
  const { Redis } = await import("ioredis");
  const client = new Redis(connection);
  const info = await client.info("server").finally(() => client.quit());
  const pid = /^process_id:(\d+)/m.exec(info)?.[1];
  if (pid === undefined) return undefined;
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("redis-server")) return undefined;
  } catch {
    return undefined;
  }
  return pidCpuClock(Number(pid));
};
