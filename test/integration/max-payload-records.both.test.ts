import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type FlowHandle, type Runtime } from "../../src/index.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

/**
 * Records that grow as they go, against the server's max payload, on both
 * brokers (the memory one refuses a record over its max payload, as NATS
 * does), each end read from a second runtime:
 * - A flow the submit accepts must be able to end. Its record grows as it
 *   runs (each job's end and reason, the flow's end and reason), and a
 *   record that fit at the submit but not once its reasons were written
 *   failed every write after: the flow never settled, a cancel included.
 *   The largest flow a submit accepts is run to its longest end (its first
 *   job cancelled with a long reason, the second skipped).
 * - A cancel's reason is the caller's text, stored in the job's record: one
 *   longer than the max payload failed the record's write (a
 *   `PermanentBrokerError` for the cancel) and the job ran on.
 */

const maxPayload = 16_384;

/** Settles like `promise`, or rejects once `ms` passed: a flow that never ends fails the test, not the run. */
const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([
    promise,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms),
    ),
  ]);

/**
 * The largest flow a submit accepts, 8 bytes at a time from the max payload
 * down: `a` with a task of that size, `b` after `a` or not, and `pad`, whose
 * task makes the flow's record, not `a`'s task, what the max payload bounds.
 */
const largestFlow = async (rt: Runtime, queue: string, bAfterA: boolean) => {
  for (let size = maxPayload; size > 0; size -= 8) {
    const submitted = await rt.flows
      .submit({
        jobs: {
          a: { queue, tasks: ["x".repeat(size)] },
          b: { queue, tasks: [1], ...(bAfterA ? { dependsOn: ["a"] } : {}) },
          pad: { queue, tasks: ["y".repeat(maxPayload / 3)] },
        },
      })
      .catch((error: unknown) => {
        if (error instanceof InvalidArgument) return undefined;
        throw error;
      });
    if (submitted) return submitted;
  }
  throw new Error("no flow accepted");
};

/** Cancels the job of the flow's node `name` once submitted, with a reason far longer than any record may hold. */
const cancelNode = async (rt: Runtime, flow: FlowHandle, name: string) => {
  const jobId = flow.snapshot().nodes[name]?.jobId as string;
  await waitUntil(async () => (await rt.jobs.get(jobId)) !== undefined, {
    timeoutMs: 10_000,
    message: `the flow's job ${name} submitted`,
  });
  await (await rt.jobs.get(jobId))?.cancel(`operator: ${"r".repeat(4000)}`);
};

describe.each(["memory", "nats"] as const)("records against the max payload (%s)", (kind) => {
  let server: NatsServerHandle | undefined;
  let confDir: string | undefined;
  let rt: Runtime;
  let reader: Runtime;
  beforeAll(async () => {
    if (kind === "nats") {
      confDir = await mkdtemp(path.join(tmpdir(), "jetstate-flow-size-"));
      const conf = path.join(confDir, "server.conf");
      await writeFile(conf, `max_payload: ${maxPayload}\n`);
      server = await startNatsServer({ args: ["-c", conf] });
      rt = await createRuntime({ servers: server.url, logger: silentLogger() });
      reader = await createRuntime({ servers: server.url, logger: silentLogger() });
    } else {
      const memory = createMemoryServer({ maxPayload });
      rt = await createTestRuntime({
        logger: silentLogger(),
        broker: createMemoryBroker({ server: memory }),
      });
      reader = await createTestRuntime({
        logger: silentLogger(),
        broker: createMemoryBroker({ server: memory }),
      });
    }
  });
  afterAll(async () => {
    await reader?.stop();
    await rt?.stop();
    await server?.dispose();
    if (confDir) await rm(confDir, { recursive: true, force: true });
  });

  it("the largest flow a submit accepts ends when its first job is cancelled with a long reason: that job failed, the next skipped", async () => {
    const flow = await largestFlow(rt, "unserved", true);
    await cancelNode(rt, flow, "pad");
    await cancelNode(rt, flow, "a");
    const ended = await within(flow.done(), 15_000, "the flow ends");
    expect(ended.status).toBe("failed");
    expect(ended.nodes.a?.status).toBe("failed");
    expect(ended.nodes.b?.status).toBe("skipped");
    // As stored: another runtime reads the same end.
    const stored = (await reader.flows.get(flow.id))?.snapshot();
    expect(stored).toMatchObject({
      status: "failed",
      nodes: { a: { status: "failed" }, b: { status: "skipped" } },
    });
    // The reasons as stored, cut to a bound but still saying what happened.
    expect(stored?.nodes.a?.reason).toMatch(/^cancelled: operator: r+/);
    expect(stored?.reason).toMatch(/^job a failed: cancelled: operator: r+/);
  });

  // Every reason at its longest: the record ends within a few bytes of its largest form, and
  // its write's headers count against the max payload too.
  it("the largest flow a submit accepts ends when all its jobs are cancelled with long reasons", async () => {
    const flow = await largestFlow(rt, "unserved", false);
    for (const name of ["pad", "a", "b"]) await cancelNode(rt, flow, name);
    const ended = await within(flow.done(), 15_000, "the flow ends");
    expect(ended).toMatchObject({
      status: "failed",
      nodes: { a: { status: "failed" }, b: { status: "failed" } },
    });
    expect((await reader.flows.get(flow.id))?.snapshot()).toMatchObject({
      status: "failed",
      nodes: { a: { status: "failed" }, b: { status: "failed" } },
    });
  });

  it("a cancel with a reason longer than the max payload ends the job, its reason stored cut and saying so", async () => {
    const job = await rt.jobs.submit({ queue: "unserved", tasks: [1, 2] });
    const reason = `operator: ${"r".repeat(20_000)}`;
    expect(await job.cancel(reason)).toMatchObject({ status: "failed" });
    const seen = await reader.jobs.get(job.id);
    await waitUntil(() => seen?.snapshot().status === "failed", {
      timeoutMs: 5000,
      message: "another runtime to read the job failed",
    });
    const stored = seen?.snapshot().reason ?? "";
    expect(stored).toMatch(/^cancelled: operator: r+… \[cut from 20021 characters\]$/);
    expect(Buffer.byteLength(stored)).toBeLessThanOrEqual(256);
  });
});
