/**
 * A cleanup pass whose deletion of one job's messages fails (here: made to
 * fail for that job's subject only) on NATS, where each job's results and
 * held tasks go in an operation of their own:
 * - an expired job whose results were not all deleted keeps its record for
 *   the next pass (deleted, a resubmit of its key would read its old
 *   answers), which then removes both;
 * - the report lists only the subjects whose messages it deleted: before,
 *   `resultsPurged` and `tasksPurged` named every subject the pass tried.
 * The oracles: the record and the messages read raw from the server.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import * as subjectMessages from "../../src/adapters/nats/subject-messages.ts";
import { createRuntime, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { rawJobRecord } from "../harness/raw-job-records.ts";
import { storedCount } from "../harness/raw-results.ts";
import { delay } from "../harness/wait.ts";

vi.mock("../../src/adapters/nats/subject-messages.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../src/adapters/nats/subject-messages.ts")>();
  return { ...real, deleteSubjectMessages: vi.fn(real.deleteSubjectMessages) };
});

/** The subjects whose deletion fails, as a broker not answering would. */
const failing = new Set<string>();
const deleteSubjectMessages = vi.mocked(subjectMessages.deleteSubjectMessages);

let server: NatsServerHandle;
let rt: Runtime;
beforeAll(async () => {
  const real = deleteSubjectMessages.getMockImplementation()!;
  deleteSubjectMessages.mockImplementation(async (jsm, stream, subject, options) => {
    if (failing.has(subject)) throw new Error(`injected: ${subject} not deleted`);
    return real(jsm, stream, subject, options);
  });
  server = await startNatsServer();
  rt = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { cleanupIntervalMs: 0 } });
});
afterAll(async () => {
  await rt?.stop();
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
  const kept = await rt.jobs.submit<number, number>({ queue, tasks: [1] });
  const gone = await rt.jobs.submit<number, number>({ queue, tasks: [2] });
  expect(await kept.done()).toMatchObject({ status: "succeeded" });
  expect(await gone.done()).toMatchObject({ status: "succeeded" });
  await worker.stop();
  const keptResults = `jetstate.results.${queue}.${kept.id}`;
  const goneResults = `jetstate.results.${queue}.${gone.id}`;
  expect(await stored("jetstate_results", keptResults)).toBeGreaterThan(0);
  failing.add(keptResults);
  await delay(50); // past the retention asked below (10 ms)

  const first = await rt.admin.cleanup({ retentionMs: 10 });
  expect(first.recordsRemoved).toEqual([gone.id]);
  expect(first.resultsPurged).toEqual([goneResults]);
  expect(await rawJobRecord(server.url, kept.id)).toMatchObject({ status: "succeeded" });
  expect(await stored("jetstate_results", keptResults)).toBeGreaterThan(0);
  expect(await rawJobRecord(server.url, gone.id)).toBeUndefined();
  expect(await stored("jetstate_results", goneResults)).toBe(0);

  failing.delete(keptResults);
  const second = await rt.admin.cleanup({ retentionMs: 10 });
  expect(second.recordsRemoved).toEqual([kept.id]);
  expect(second.resultsPurged).toEqual([keptResults]);
  expect(await rawJobRecord(server.url, kept.id)).toBeUndefined();
  expect(await stored("jetstate_results", keptResults)).toBe(0);
});

it("held tasks whose deletion failed are not reported purged, and the next pass removes them", async () => {
  const queue = "left-held";
  const job = await rt.jobs.submit({ queue, tasks: [1, 2], delayMs: 3_600_000 });
  const heldStream = `jetstate_delayed_${queue}`;
  const held = `jetstate.delayed.${queue}.${job.id}`;
  expect(await stored(heldStream, held)).toBe(2);
  // Its cancel's removal of them fails (the cancel stands), and so does the pass's.
  failing.add(held);
  expect(await job.cancel("not needed")).toMatchObject({ status: "failed" });
  expect(await stored(heldStream, held)).toBe(2);

  const first = await rt.admin.cleanup();
  expect(first.tasksPurged).not.toContain(held);
  expect(await stored(heldStream, held)).toBe(2);

  failing.delete(held);
  const second = await rt.admin.cleanup();
  expect(second.tasksPurged).toContain(held);
  expect(await stored(heldStream, held)).toBe(0);
});
