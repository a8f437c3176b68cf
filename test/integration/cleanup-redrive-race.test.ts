/**
 * A redrive that lands while a cleanup pass runs, between its survey of the
 * records (the job expired, finished past its retention) and its removals:
 * the job it reopened is no longer expired, and nothing of it goes. Its
 * record went (deleted at the revision the pass read again at its end, the
 * redrive's), and its answers stored before the survey with it: `redrive()`
 * had answered, and the job was gone. The oracles: the record read raw from
 * the jobs bucket, and the job's end as the handler's ledger says it ran.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { NatsJobBroker } from "../../src/adapters/nats/job-broker.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { within } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");

describe("a redrive during a cleanup pass", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ name: "cleaner", logger, jobs: { cleanupIntervalMs: 0 } }, (started) => {
    ({ server, rt } = started);
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  const stored = async (id: string) => {
    const nc = await connect({ servers: server.url, name: "raw" });
    try {
      const entry = await (await new Kvm(nc).open(names.jobsBucket)).get(id);
      return entry?.operation === "PUT" ? (entry.json() as { status: string }) : undefined;
    } finally {
      await nc.close();
    }
  };

  it("keeps the job it reopened: its record and its answers stay, and it ends with every task done", async () => {
    let fixed = false;
    const ran: number[] = [];
    const worker = rt.workers.start<number, number>({
      queue: "redriven",
      handler: (task) => {
        if (task.index === 1 && !fixed) throw new Error("not yet");
        ran.push(task.index);
        return task.payload;
      },
    });
    try {
      const job = await rt.jobs.submit<number, number>({ queue: "redriven", tasks: [0, 1], maxDeliver: 1 });
      expect(await within(job.done(), 20_000)).toMatchObject({ status: "failed", done: 1, dead: 1 });
      // The pass surveys the records (the job finished, past a retention of 0), then the redrive lands.
      const list = NatsJobBroker.prototype.listRecordsAndMarkers;
      vi.spyOn(NatsJobBroker.prototype, "listRecordsAndMarkers").mockImplementationOnce(async function (
        this: NatsJobBroker,
      ) {
        const listed = await list.call(this);
        fixed = true;
        await rt.jobs.redrive(job.id);
        return listed;
      });
      const report = await rt.admin.cleanup({ retentionMs: 0 });
      expect(fixed).toBe(true);
      expect(report.recordsRemoved).not.toContain(job.id);
      expect(await stored(job.id)).toMatchObject({ status: expect.stringMatching(/running|succeeded/) });
      const again = await rt.jobs.get(job.id);
      expect(await within(again!.done(), 20_000)).toMatchObject({ status: "succeeded", done: 2, dead: 0 });
      expect(await stored(job.id)).toMatchObject({ status: "succeeded" });
      expect(ran.sort()).toEqual([0, 1]);
    } finally {
      await worker.stop();
    }
  }, 60_000);
});
