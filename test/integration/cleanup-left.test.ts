/**
 * A cleanup pass whose deletions of jobs' messages fail (here: every one of
 * that pass made to fail, as in an outage) on NATS, where each job's results and
 * held tasks go in an operation of their own:
 * - an expired job whose results were not all deleted keeps its record for
 *   the next pass (deleted, a resubmit of its key would read its old
 *   answers), which then removes both;
 * - the report lists only the subjects whose messages it deleted: before,
 *   `resultsPurged` and `tasksPurged` named every subject the pass tried.
 * The oracles: the record and the messages read raw from the server.
 */
import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { createRuntime, type Runtime } from "../../src/index.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type Faults, faultyBroker } from "../harness/faulty-broker.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { rawJobRecord } from "../harness/raw-job-records.ts";
import { storedCount } from "../harness/raw-results.ts";
import { delay } from "../harness/wait.ts";

/** While true, every deletion of one job's messages by the cleanup pass fails, as in an outage. */
let failing = false;

let server: NatsServerHandle;
let rt: Runtime;
let faults: Faults;
let stopCore: () => Promise<void>;
beforeAll(async () => {
  server = await startNatsServer();
  const options = { servers: server.url, logger: silentLogger(), jobs: { cleanupIntervalMs: 0 } };
  // The NATS broker on a core whose runs of the pass's per-job deletions fail on demand (a module
  // mock is not enough: the suite's files share their module graph).
  const core = await createRuntimeCore(options);
  stopCore = () => core.stop();
  const run: typeof core.run = (name, op, runOptions) =>
    failing && name === "cleanup.messages"
      ? Promise.reject(new TransientBrokerError({ message: `injected: ${name}`, operation: name }))
      : core.run(name, op, runOptions);
  const inner = createNatsBroker(
    { ...core, run },
    { retentionMs: core.options.jobs.retentionMs, holder: `nats.${randomUUID().slice(0, 8)}` },
  );
  const faulty = faultyBroker(inner);
  faults = faulty.faults;
  rt = await createRuntime({ ...options, broker: faulty.broker });
});
afterAll(async () => {
  await rt?.stop();
  await stopCore?.();
  await server?.dispose();
});

const stored = async (stream: string, subject: string) => {
  const nc = await connect({ servers: server.url });
  try {
    return await storedCount(await jetstreamManager(nc), stream, subject);
  } finally {
    await nc.close();
  }
};

it("an expired job whose results were not deleted keeps its record, and is not reported purged", async () => {
  const queue = "left-results";
  const worker = rt.workers.start<number, number>({ queue, handler: (task) => task.payload });
  const job = await rt.jobs.submit<number, number>({ queue, tasks: [1] });
  expect(await job.done()).toMatchObject({ status: "succeeded" });
  await worker.stop();
  const results = `jetstate.results.${queue}.${job.id}`;
  expect(await stored("jetstate_results", results)).toBeGreaterThan(0);
  await delay(50); // past the retention asked below (10 ms)

  failing = true;
  const first = await rt.admin.cleanup({ retentionMs: 10 });
  failing = false;
  expect(first.recordsRemoved).not.toContain(job.id);
  expect(first.resultsPurged).not.toContain(results);
  expect(await rawJobRecord(server.url, job.id)).toMatchObject({ status: "succeeded" });
  expect(await stored("jetstate_results", results)).toBeGreaterThan(0);

  const second = await rt.admin.cleanup({ retentionMs: 10 });
  expect(second.recordsRemoved).toContain(job.id);
  expect(second.resultsPurged).toContain(results);
  expect(await rawJobRecord(server.url, job.id)).toBeUndefined();
  expect(await stored("jetstate_results", results)).toBe(0);
});

it("held tasks whose deletion failed are not reported purged, and the next pass removes them", async () => {
  const queue = "left-held";
  const job = await rt.jobs.submit({ queue, tasks: [1, 2], delayMs: 3_600_000 });
  const heldStream = `jetstate_delayed_${queue}`;
  const held = `jetstate.delayed.${queue}.${job.id}`;
  expect(await stored(heldStream, held)).toBe(2);
  // Its cancel's removal of them fails (the cancel stands), and so does the pass's.
  faults.fail("removeTasks", Number.POSITIVE_INFINITY, job.id);
  expect(await job.cancel("not needed")).toMatchObject({ status: "failed" });
  expect(await stored(heldStream, held)).toBe(2);

  failing = true;
  const first = await rt.admin.cleanup();
  failing = false;
  expect(first.tasksPurged).not.toContain(held);
  expect(await stored(heldStream, held)).toBe(2);

  const second = await rt.admin.cleanup();
  expect(second.tasksPurged).toContain(held);
  expect(await stored(heldStream, held)).toBe(0);
});
