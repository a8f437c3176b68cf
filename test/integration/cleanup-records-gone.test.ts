/**
 * Cleanup removes a finished job's record from the jobs bucket's stream,
 * message and all: no delete marker is left. A KV delete leaves one (the
 * bucket keeps one message a key, and a marker is that message), so a
 * service that ran a job a second kept a message a second for good, which
 * every page of `rt.jobs.list()`, every scan and every restart of the
 * server reads. The oracle is the server's own count of the messages stored
 * in the bucket's stream, read through a connection of this test's own.
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

  it("leaves no message of theirs in the jobs bucket's stream, removes the markers older versions left, keeps a running job's", async () => {
    const worker = rt.workers.start<number, number>({ queue: "gone", handler: (t) => t.payload });
    const finished = [];
    for (let n = 0; n < 6; n++) {
      const job = await rt.jobs.submit<number, number>({ queue: "gone", tasks: [n, n + 1] });
      expect(await job.done()).toMatchObject({ status: "succeeded" });
      finished.push(job.id);
    }
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

    const report = await rt.admin.cleanup({ retentionMs: 0 });
    expect([...report.recordsRemoved].sort()).toEqual([...finished].sort());
    // Nothing of theirs is stored: no record, no marker (the earlier version's gone too).
    expect(await subjects()).toEqual([`$KV.${names.jobsBucket}.${running.id}`]);
    expect((await jsm.streams.info(stream)).state.messages).toBe(1);
    for (const id of finished) expect(await bucket.get(id)).toBeNull();
    expect(await rt.jobs.record(running.id)).toMatchObject({ status: "running" });
  }, 60_000);
});
