/**
 * On NATS: a flow cancelled while a node's submit is under way (slow between
 * its record's create and its publish: 8 s of its 30 s window), its
 * submitter alive and its lease renewed, the cancel made on another runtime
 * with the `submitter` role alone (an API's: no reaper, no takeover, so it
 * never lists the leases and never reads the server's clock) whose clock
 * runs 20 s ahead of the submitter's and of the server's. 20 s: less than
 * the commit deadline and the reaper's grace (40 s), so the deadline, read
 * as written, says the submit may still be alive; more than the lease
 * (10 s).
 *
 * A cancelled flow rolls back a node's submit once its lease has run out
 * (`observeJob`), and leaves a live one alone ("a submit whose lease is
 * still renewed ... is alive"). `leases.get` on NATS with no reading of the
 * server's clock reads the lease as written, by the submitter's clock, and
 * compares it with the canceller's clock 20 s ahead: the live submit's lease
 * reads run out, and the canceller rolls the live submit back under its
 * submitter (`acquire` reads the server's clock first in that case; `get`
 * does not). Oracle: the job's record read raw by the submitter's hook, once
 * created and once its 8 s went by.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { FlowRegistry } from "../../src/api/flows.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { jobsFace } from "../../src/api/jobs-face.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { offsetBy } from "../harness/clock-backends.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { rawJobRecords } from "../harness/raw-job-records.ts";
import { delay, waitUntil } from "../harness/wait.ts";

let nats: NatsServerHandle;
let nc: NatsConnection;
beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
}, 30_000);
afterAll(async () => {
  await nc?.close();
  await nats?.dispose();
});

it("a canceller 20 s ahead leaves a node's live submit (its lease renewed) to its submitter", async () => {
  const queue = "q";
  const ran: string[] = [];
  const w = await createRuntime({ servers: nats.url, name: "w", roles: ["worker"], logger: silentLogger() });
  w.workers.start({
    queue,
    concurrency: 4,
    handler: (task) => {
      ran.push(String(task.payload));
      return 1;
    },
  });
  /** The job's record read raw by the hook: as created, and once the submit's 8 s went by. */
  const seen: string[] = [];
  const rawRecord = async () => {
    const [r] = await rawJobRecords(nc, "jetstate_jobs");
    return r ? `${r.submitId} ${r.phase}${r.reason ? ` ${r.reason}` : ""}` : "none";
  };
  let created: () => void = () => undefined;
  const recordCreated = new Promise<void>((resolve) => {
    created = resolve;
  });
  // The flow's submitter, its clock the server's; each of its submits takes 8 s between its
  // record's create and its publish. Its heartbeat renews the node's lease meanwhile.
  const core = await createRuntimeCore({
    servers: nats.url,
    name: "s",
    logger: silentLogger(),
    roles: ["submitter"],
  });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "s" });
  const jobs = new JobRegistry(core, broker, {
    reapIntervalMs: 3600_000,
    reapGraceMs: 10_000,
    leaseMs: 10_000,
    takeOver: false,
    submitHooks: {
      afterStep: async (at) => {
        if (at !== SubmitStep.recordCreated) return;
        seen.push(await rawRecord());
        created();
        await delay(8000);
        seen.push(await rawRecord());
      },
    },
  });
  const flows = new FlowRegistry(core, broker, jobsFace(jobs), (listener) => jobs.records.listen(listener));
  // The canceller: the submitter role alone, its clock 20 s ahead.
  const api = await createRuntime({
    servers: nats.url,
    name: "api",
    roles: ["submitter"],
    logger: silentLogger(),
    clock: offsetBy(20_000),
  });
  try {
    // Not awaited: a flow's submit resolves after its first step, which submits the node.
    const submitted = flows.submit({ id: "f1", jobs: { b: { queue, tasks: ["b0", "b1"], lane: false } } });
    await recordCreated;
    const handle = await api.flows.get("f1");
    // The cancel's own step looks at the node being submitted (the flow cancelled).
    const cancelled = handle?.cancel("stop").catch((error: unknown) => `cancel failed: ${String(error)}`);
    await waitUntil(() => seen.length === 2, { timeoutMs: 20_000, message: "the submit's 8 s went by" });
    await submitted.catch(() => undefined);
    await cancelled;
    expect(seen, "the node's record as its live submitter saw it, created and 8 s on").toEqual([
      // 8 s into its 30 s window, its submitter alive and its lease renewed: still its submit.
      seen[0],
      seen[0],
    ]);
  } finally {
    await flows.stop();
    await jobs.stop();
    await core.stop();
    await api.stop();
    await w.stop();
  }
}, 60_000);
