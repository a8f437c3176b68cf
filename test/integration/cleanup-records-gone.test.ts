/**
 * Cleanup removes a finished job's record from the jobs bucket's stream,
 * message and all: no delete marker is left. A KV delete leaves one (the
 * bucket keeps one message a key, and a marker is that message), so a
 * service that ran a job a second kept a message a second for good, which
 * every page of `rt.jobs.list()`, every scan and every restart of the
 * server reads. And it purges the dead letters of the jobs that have some,
 * not one purge per job removed. The oracles are the server's own counts of
 * the messages stored in the bucket's stream and in the dead-letter stream,
 * and the purge requests it receives, read through a connection of this
 * test's own.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it, onTestFinished } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");

describe("cleanup of finished records", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ name: "cleaner", logger, jobs: { cleanupIntervalMs: 0 } }, (started) => {
    ({ server, rt } = started);
  });

  it("leaves no message of theirs in the jobs bucket's stream nor dead letters, with one purge for the one job that has them; removes older versions' markers; keeps a running job's", async () => {
    const worker = rt.workers.start<number, number>({ queue: "gone", handler: (t) => t.payload });
    const finished = [];
    for (let n = 0; n < 6; n++) {
      const job = await rt.jobs.submit<number, number>({ queue: "gone", tasks: [n, n + 1] });
      expect(await job.done()).toMatchObject({ status: "succeeded" });
      finished.push(job.id);
    }
    // One with a dead letter: a task that fails on every delivery.
    const dying = await rt.jobs.submit<number, number>({ queue: "dying", tasks: [1], maxDeliver: 1 });
    const failing = rt.workers.start<number, number>({
      queue: "dying",
      handler: () => {
        throw new Error("never works");
      },
    });
    expect(await dying.done()).toMatchObject({ status: "failed", dead: 1 });
    await failing.stop();
    finished.push(dying.id);
    await worker.stop();
    // One job still running (no worker now): its record stays.
    const running = await rt.jobs.submit({ queue: "gone", tasks: [1] });

    const nc = await connect({ servers: server.url, name: "cleanup-records-test" });
    onTestFinished(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const stream = `KV_${names.jobsBucket}`;
    const subjects = async () =>
      Object.keys((await jsm.streams.info(stream, { subjects_filter: ">" })).state.subjects ?? {});
    // A record an earlier version's cleanup removed with a KV delete: its marker is all that is left.
    const bucket = await new Kvm(nc).open(names.jobsBucket);
    await bucket.put("jlegacy", "{}");
    await bucket.delete("jlegacy");
    expect((await bucket.get("jlegacy"))?.operation).toBe("DEL");
    expect((await subjects()).length).toBe(finished.length + 2);

    const deadLetters = async () =>
      Object.keys((await jsm.streams.info(names.deadStream, { subjects_filter: ">" })).state.subjects ?? {});
    // A letter stored after its job's record went (the advisory handled late), and one of the
    // running job: stored raw, as the dead-letter processor would.
    await nc.request(names.deadSubject("dying", "jgone"), "{}");
    await nc.request(names.deadSubject("gone", running.id), "{}");
    expect((await deadLetters()).sort()).toEqual(
      [
        names.deadSubject("dying", dying.id),
        names.deadSubject("dying", "jgone"),
        names.deadSubject("gone", running.id),
      ].sort(),
    );
    // Each dead-letter purge the pass asks of the server, as the server receives it.
    const purges: string[] = [];
    const watch = nc.subscribe(`$JS.API.STREAM.PURGE.${names.deadStream}`, {
      callback: (_e, m) => {
        purges.push(m.string());
      },
    });
    await nc.flush();
    const report = await rt.admin.cleanup({ retentionMs: 0 });
    await nc.flush();
    watch.unsubscribe();
    // The dead letters of the expired job that has some, and of the job with no record, go, a
    // purge each: not one per job removed. The running job's stay.
    expect(await deadLetters()).toEqual([names.deadSubject("gone", running.id)]);
    expect(purges).toHaveLength(2);
    expect([...report.recordsRemoved].sort()).toEqual([...finished].sort());
    // Nothing of theirs is stored: no record, no marker (the earlier version's gone too).
    expect(await subjects()).toEqual([`$KV.${names.jobsBucket}.${running.id}`]);
    expect((await jsm.streams.info(stream)).state.messages).toBe(1);
    for (const id of finished) expect(await bucket.get(id)).toBeNull();
    expect(await rt.jobs.record(running.id)).toMatchObject({ status: "running" });
  }, 60_000);
});
