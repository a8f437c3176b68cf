/**
 * A worker's stop waits for its passes over the queue's jobs
 * (`QueueJobs.stopped()`), and a pass reads from the server: with the
 * connection up and the JetStream API silent (a cluster electing a
 * leader, when reconnect passes run), a read answers only at its timeout,
 * 10 s, and `worker.stop()` waited that long. The oracle is a read that
 * never answers during the test and a bound far below any timeout.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { QueueJobs } from "../../src/api/queue-jobs.ts";
import type { RecordFeed } from "../../src/api/record-feed.ts";
import { LoopGroup } from "../../src/effects/loop-group.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { within } from "../harness/wait.ts";

describe("QueueJobs.stopped()", () => {
  it("resolves once the worker stops, while a pass's read does not answer", async () => {
    const log = silentLogger();
    const loops = new LoopGroup(log);
    let asked: () => void = () => {};
    const asking = new Promise<void>((resolve) => {
      asked = resolve;
    });
    const broker = {
      queueConsumers: () => {
        asked();
        return new Promise(() => {}); // no answer
      },
      getRecord: () => new Promise(() => {}),
    } as unknown as Broker;
    const feed = {
      listen: (listener: { onPlaced(): void }) => {
        queueMicrotask(() => listener.onPlaced());
        return () => {};
      },
    } as unknown as RecordFeed;
    const stop = new AbortController();
    const followed: string[] = [];
    const jobs = new QueueJobs(
      { broker, records: feed, loops, log },
      "q",
      {
        onRecord: (r) => followed.push(r.id),
        onLane: () => followed.push("lane"),
        followed: () => [],
        forgetRevisions: () => undefined,
      },
      stop.signal,
      "worker-jobs:test",
    );
    await asking;
    stop.abort();
    // "never" if still waiting after 1 s: the bound, far below the read's 10 s timeout.
    const stopped = await within(
      jobs.stopped().then(() => "stopped"),
      1000,
    );
    expect(stopped).toBe("stopped");
    expect(followed).toEqual([]);
  });
});
