/**
 * What one small job asks of nats-server, counted by the server's side of
 * the wire: a connection of the test's own subscribed to the JetStream API
 * subjects sees every request any client sends (`$JS.API.>`), and the
 * stream's own state says what is left. Not jetstate's view of itself.
 *
 * A lane job (one task), its queue's results feed already reading: its
 * submit looks for no result stored before it (none can be: its task is
 * not published yet), its end writes the record on the revision its commit
 * wrote (no read) and looks for no task on the lane (its worker acks the
 * task once its answer is stored). Each such lookup was one request and,
 * for a get, an audit advisory the server publishes. Its `results()` after
 * `done()` reads what its actor kept (two gets before).
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { PermanentError } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults, storedCount } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

const names = brokerNames("jetstate");

describe("the requests of a small job on nats-server", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let oracle: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { lane: true } });
    oracle = await connect({ servers: server.url, name: "oracle" });
  });
  afterAll(async () => {
    await oracle?.close();
    await rt?.stop();
    await server?.dispose();
  });

  it("a lane job's submitter reads no record, no stored result and no lane task from submit to done and results(), and writes its record twice", async () => {
    const queue = "requests";
    // The worker in a runtime of its own: it may read a job's record when the task outruns its
    // watch; what is counted is what the submitting runtime asks.
    const workers = await createRuntime({ servers: server.url, logger: silentLogger(), name: "workers" });
    const worker = workers.workers.start<number, number>({ queue, handler: (t) => t.payload * 2 });
    // The queue's streams, its lane and its results feed are set up by a first job.
    const first = await rt.jobs.submit<number, number>({ queue, tasks: [1] });
    expect(await first.done()).toMatchObject({ status: "succeeded", done: 1 });
    // Its lease's release (sent after done()) is not counted: gone from the leases bucket first.
    const jsm = await jetstreamManager(oracle);
    const leaseReleased = (jobId: string) =>
      waitUntil(
        async () =>
          (await storedCount(jsm, `KV_${names.leasesBucket}`, `$KV.${names.leasesBucket}.${jobId}`)) === 0,
        { timeoutMs: 5000, message: `the lease of ${jobId} released` },
      );
    await leaseReleased(first.id);

    // Each request with its reply subject: a client's requests answer to its own inbox prefix.
    const requests: Array<{ subject: string; reply: string }> = [];
    const sub = oracle.subscribe("$JS.API.>", {
      callback: (_e, m) => {
        requests.push({ subject: m.subject, reply: m.reply ?? "" });
      },
    });
    // Each write of a record, as the server receives it (a KV write is a publish to its key).
    const recordWrites: string[] = [];
    const writes = oracle.subscribe(`$KV.${names.jobsBucket}.>`, {
      callback: (_e, m) => {
        recordWrites.push(m.subject);
      },
    });
    await oracle.flush();
    const jobs = 5;
    const ids: string[] = [];
    for (let n = 0; n < jobs; n++) {
      const job = await rt.jobs.submit<number, number>({ queue, tasks: [n] });
      ids.push(job.id);
      expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
      // Its result, from what its actor kept: the worker's answer, read without the server.
      const results = [];
      for await (const r of job.results()) results.push(r);
      expect(results).toEqual([{ taskId: `${job.id}.0`, index: 0, ok: true, result: n * 2 }]);
    }
    // Whatever the jobs' ends still send (their leases' releases) is counted too: each job's,
    // not only the last one's (a release is sent after done(); under load an earlier one's can
    // come after the last one's: the full suite once counted 4 of 5).
    for (const id of ids) await leaseReleased(id);
    await oracle.flush();
    sub.unsubscribe();
    writes.unsubscribe();

    // Each record is written twice: its create and its end, which carries its commit.
    for (const id of ids) {
      expect(recordWrites.filter((subject) => subject === `$KV.${names.jobsBucket}.${id}`)).toHaveLength(2);
      const stored = await jsm.streams.getMessage(`KV_${names.jobsBucket}`, {
        last_by_subj: `$KV.${names.jobsBucket}.${id}`,
      });
      expect(stored?.json()).toMatchObject({ phase: "committed", status: "succeeded" });
    }

    // Each job's lease is released by its submitter, by its sequence (a server not in a cluster:
    // no filtered purge, ~100 µs more of the server's CPU): one a job, which also tells the
    // submitter's inbox.
    expect(requests.filter((r) => r.subject.startsWith("$JS.API.STREAM.PURGE."))).toEqual([]);
    const releases = requests.filter(
      (r) => r.subject === `$JS.API.STREAM.MSG.DELETE.KV_${names.leasesBucket}`,
    );
    expect(releases).toHaveLength(jobs);
    const inboxOf = (reply: string) => reply.split(".").slice(0, 2).join(".");
    const submitter = new Set(releases.map((r) => inboxOf(r.reply)));
    expect(submitter.size).toBe(1);
    const gets = (stream: string) =>
      requests
        .filter((r) => r.subject === `$JS.API.STREAM.MSG.GET.${stream}` && submitter.has(inboxOf(r.reply)))
        .map((r) => r.subject);
    expect(gets(names.resultsStream), "stored results looked for").toEqual([]);
    expect(gets(names.tasksStream(queue)), "lane tasks looked for").toEqual([]);
    expect(gets(`KV_${names.jobsBucket}`), "records read").toEqual([]);

    // And no task is left on the lane: each was acked once its answer was stored.
    await waitUntil(async () => (await jsm.streams.info(names.tasksStream(queue))).state.messages === 0, {
      timeoutMs: 5000,
      message: "every lane task acked away",
    });
    await worker.stop();
    await workers.stop();
  });

  it("results() from what the actor kept says what the server stores; a job with a failure reads the server", async () => {
    const queue = "kept";
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 8,
      handler: (t) => {
        if (t.payload < 0) throw new PermanentError("refused");
        return t.payload * 3;
      },
    });
    const whole = await rt.jobs.submit<number, number>({
      queue,
      tasks: Array.from({ length: 20 }, (_, i) => i),
    });
    expect(await whole.done()).toMatchObject({ status: "succeeded", done: 20 });
    const mixed = await rt.jobs.submit<number, number>({ queue, tasks: [1, -1, 2], maxFailures: 1 });
    expect(await mixed.done()).toMatchObject({ done: 2, failed: 1 });
    for (const job of [whole, mixed]) {
      const read: Array<{ i: number; ok: boolean }> = [];
      for await (const r of job.results()) read.push({ i: r.index, ok: r.ok });
      // The oracle: the entries the server stores for the job, read raw by the test's connection.
      const raw = await natsRawResults(oracle, queue, job.id);
      const stored = new Map(raw.map((e) => [e.i, e.ok === true]));
      expect(read.sort((a, b) => a.i - b.i)).toEqual(
        [...stored].sort(([a], [b]) => a - b).map(([i, ok]) => ({ i, ok })),
      );
    }
    await worker.stop();
  });
});
