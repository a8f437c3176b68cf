/**
 * On NATS: a flow whose node submit is slow between its record's create and
 * its publish (a big job, a slow link: 8 s of its 30 s window), its
 * submitter alive, while another runtime with the `submitter` role alone
 * (an API's: no reaper, no takeover, so it never lists the leases and never
 * reads the server's clock) sweeps the flow — every submitter sweeps every
 * live flow. Both runtimes are on one host whose clock is a minute ahead of
 * the server's. `commitDeadlineBy` with no reading takes the judge's clock
 * for the server's: the sweep finds the live submit past its deadline and
 * grace and rolls it back (before, it judged the submit by its own stamps,
 * the same clock's, and left it alone). Found by a review of the commit
 * deadline across clocks. Oracles: the submits the
 * hook saw, the tasks the handler ran, the job records read raw.
 */
import { expect, it } from "vitest";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { FlowRegistry } from "../../src/api/flows.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { jobsFace } from "../../src/api/jobs-face.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { offsetBy } from "../harness/clock-backends.ts";
import { rawJobRecords } from "../harness/raw-job-records.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { delay } from "../harness/wait.ts";

const served = useServerConnection();

// The submitter on the sweeper's host (a minute ahead too: judged as written, one clock), or on
// a host whose clock is right (judged as written, the sweeper's clock a minute past the
// submitter's: the live submit rolled back at once; it reads the server's clock first now).
it.each([
  { host: "the same host", submitterAheadMs: 60_000, prefix: "same" },
  { host: "a host whose clock is right", submitterAheadMs: 0, prefix: "right" },
])(
  "a sweeping runtime a minute ahead leaves a live node submit on $host alone: one submit, each task run once, the flow succeeds",
  async ({ submitterAheadMs, prefix }) => {
    const queue = "q";
    const ran: string[] = [];
    const w = await createRuntime({
      servers: served.server.url,
      prefix,
      name: "w",
      roles: ["worker"],
      logger: silentLogger(),
    });
    w.workers.start({
      queue,
      concurrency: 4,
      handler: (task) => {
        ran.push(String(task.payload));
        return 1;
      },
    });
    // The flow's submitter, on the same host (its clock a minute ahead too); each of its submits
    // takes 8 s between its record's create and its publish.
    let submits = 0;
    /** The job's record read raw by the hook: as created, and once the submit's 8 s went by. */
    const seen: string[] = [];
    const rawRecord = async () => {
      const [r] = await rawJobRecords(served.nc, `${prefix}_jobs`);
      return r ? `${r.submitId} ${r.phase}${r.reason ? ` ${r.reason}` : ""}` : "none";
    };
    const core = await createRuntimeCore({
      servers: served.server.url,
      prefix,
      name: "s",
      logger: silentLogger(),
      roles: ["submitter"],
      clock: offsetBy(submitterAheadMs),
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
          submits++;
          seen.push(await rawRecord());
          await delay(8000);
          seen.push(await rawRecord());
        },
      },
    });
    const flows = new FlowRegistry(core, broker, jobsFace(jobs), (listener) => jobs.records.listen(listener));
    // Another runtime that drives flows (the submitter role alone), its clock a minute ahead.
    const api = await createRuntime({
      servers: served.server.url,
      prefix,
      name: "api",
      roles: ["submitter"],
      logger: silentLogger(),
      clock: offsetBy(60_000),
    });
    try {
      const flow = await flows.submit({ id: "f1", jobs: { b: { queue, tasks: ["b0", "b1"], lane: false } } });
      const outcome = await Promise.race([
        flow.done().then(
          (r) => `done: ${JSON.stringify(r)}`,
          (e: unknown) => `failed: ${String(e)}`,
        ),
        delay(25_000).then(() => "not done 25 s on"),
      ]);
      const records = await rawJobRecords(served.nc, `${prefix}_jobs`);
      const created = seen[0] as string;
      expect(created).toMatch(/ submitting$/);
      expect({
        seen,
        outcome,
        submits,
        ran: [...ran].sort(),
        records: records.map((r) => `${r.phase} ${r.status}${r.reason ? ` ${r.reason}` : ""}`),
      }).toEqual({
        // 8 s into its 30 s window, its submitter alive: still its submit, still being submitted.
        seen: [created, created],
        outcome: expect.stringMatching(/^done/),
        submits: 1,
        ran: ["b0", "b1"],
        records: ["committed succeeded"],
      });
    } finally {
      await flows.stop();
      await jobs.stop();
      await core.stop();
      await api.stop();
      await w.stop();
    }
  },
  60_000,
);
