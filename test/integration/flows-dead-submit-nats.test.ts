/**
 * On NATS: a flow cancelled while a node's submit is dead (its runtime died
 * after the job's record and lease were written, before its tasks). The
 * cancel ends within seconds, not once that submit's commit deadline and the
 * reaper's grace passed (40 s on), and the rolled-back job keeps no lease:
 * the leases bucket, read with a nats.js client of its own, holds no key for
 * it (left, a runtime's takeover pass or a `/jsz` reading saw a job not over
 * that never runs). No runtime here has the supervisor role: no takeover pass
 * removes a lease behind the driver's back. Oracles: the buckets read raw,
 * and the time `cancel()` took.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { decodeFlowRecord } from "../../src/kernel/flow-record.ts";
import { decodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { submitAndDieOnNats } from "../harness/flows-dying-submitter.ts";
import { liveEntries, liveKeys } from "../harness/kv-keys.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { within } from "../harness/wait.ts";

/** Well under the 40 s the cancel waited, generous for a loaded 2-core machine. */
const promptMs = 10_000;

const served = useServerConnection();

/** The value stored under `key` in the bucket, read raw. */
const raw = async (bucket: string, key: string): Promise<string | undefined> =>
  (await liveEntries(served.nc, bucket, key)).find((e) => e.key === key)?.entry.string();

it("a flow cancelled while a node's submit is dead ends at once, and its job keeps no lease", async () => {
  // The dying runtime: its job submit dies once its record is written, its driver with it.
  await submitAndDieOnNats(served.server.url, SubmitStep.recordCreated, {
    id: "f1",
    jobs: { b: { queue: "q", tasks: ["b0", "b1"] } },
  });

  const flowOf = async () => decodeFlowRecord((await raw("jetstate_flows", "f1")) as string);
  const jobId = (await flowOf()).nodes.b?.jobId as string;
  const phase = async () => decodeRecord((await raw("jetstate_jobs", jobId)) as string).phase;
  expect(await phase()).toBe("submitting");
  expect(await liveKeys(served.nc, "jetstate_leases", jobId)).toEqual([jobId]);

  const ran: string[] = [];
  const w = await createRuntime({
    servers: served.server.url,
    name: "w",
    roles: ["worker"],
    logger: silentLogger(),
  });
  w.workers.start({
    queue: "q",
    handler: async (task) => {
      ran.push(String(task.payload));
      return 1;
    },
  });
  const s = await createRuntime({
    servers: served.server.url,
    name: "s",
    roles: ["submitter"],
    logger: silentLogger(),
  });
  const flow = await s.flows.get("f1");
  const started = Date.now();
  const ended = await within(flow?.cancel("stop") as Promise<unknown>, promptMs);
  expect(ended, `cancel() had not resolved ${promptMs} ms on`).not.toBe("never");
  expect(Date.now() - started).toBeLessThan(promptMs);
  expect((await flowOf()).nodes.b).toMatchObject({ status: "cancelled" });
  expect(await phase()).toBe("rolledBack");
  expect(await liveKeys(served.nc, "jetstate_leases", jobId)).toEqual([]);
  // Nothing of the job is left to run: its queue's tasks stream, read raw, holds no task.
  const jsm = await jetstreamManager(served.nc);
  const stored = await jsm.streams.info("jetstate_tasks_q").then(
    (info) => info.state.messages,
    () => 0,
  );
  expect(stored).toBe(0);
  expect(ran).toEqual([]);
  await s.stop();
  await w.stop();
}, 60_000);
