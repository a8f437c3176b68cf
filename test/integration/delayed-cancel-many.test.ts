/**
 * A cancel of a job holding many delayed tasks: its held tasks are removed
 * one by one (a filtered purge would move the queue's movers past every
 * held task), under a deadline that grows with them. Under the operation's
 * own (1 s here, 10 s by default) the cancel failed with its record already
 * cancelled, its held tasks left on the server. The oracle: the job's held
 * tasks as the server counts them on the queue's delayed stream, read raw.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { within } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");

describe("a cancel of a job holding many delayed tasks", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime(
    { name: "canceller", logger, jobs: { cleanupIntervalMs: 0 }, connection: { operationTimeoutMs: 1000 } },
    (started) => {
      ({ server, rt } = started);
    },
  );

  const heldOf = async (queue: string, jobId: string) => {
    const nc = await connect({ servers: server.url, name: "raw" });
    try {
      const subject = names.delayedSubject(queue, jobId);
      const info = await (await jetstreamManager(nc)).streams.info(names.delayedStream(queue), {
        subjects_filter: subject,
      });
      return info.state.subjects?.[subject] ?? 0;
    } finally {
      await nc.close();
    }
  };

  it("removes them all, past the operation's deadline, and answers cancelled", async () => {
    const tasks = Array.from({ length: 8000 }, (_, n) => n);
    const job = await rt.jobs.submit<number, number>({ queue: "held-many", tasks, delayMs: 3_600_000 });
    expect(await heldOf("held-many", job.id)).toBe(tasks.length);
    expect(await within(job.cancel("not needed"), 60_000)).toMatchObject({
      status: "failed",
      reason: expect.stringContaining("cancelled"),
    });
    expect(await heldOf("held-many", job.id)).toBe(0);
  }, 120_000);
});
