/**
 * A tick's fire in a runtime whose scheduler comes second: every runtime's
 * scheduler fires every tick. A tick another runtime already fired as a
 * lane job (its record says `submitting` until its write a second on; the
 * clock here never gets there) must not be submitted again, and its commit
 * must be written. The oracles are the second runtime's broker calls,
 * counted by a proxy around it, and the record as the server holds it.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { fireTick } from "../../src/api/schedules.ts";
import { planSubmit } from "../../src/effects/plan-submit.ts";
import { decodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type ScheduleRecord, tickKey } from "../../src/kernel/schedule-record.ts";
import { createMemoryBroker, createMemoryServer, ManualClock } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { within } from "../harness/wait.ts";

const at = 1_700_000_000_000;
const schedule: ScheduleRecord = {
  v: 1,
  id: "nightly",
  rule: { everyMs: 60_000 },
  missed: "skip",
  job: { queue: "ticks", tasks: [1] },
  since: at,
  createdAt: at,
  updatedAt: at,
};

/** How far the runtimes' time (`at` on) is ahead of the server's, whose clock is the real one. */
const aheadOfRealServer = () => at - Date.now();

describe("fireTick", () => {
  const server = createMemoryServer();
  const runtimes: Runtime[] = [];
  const runtime = async (broker: Broker = createMemoryBroker({ server })) => {
    const rt = await createRuntime({ logger: silentLogger(), clock: new ManualClock(at), broker });
    runtimes.push(rt);
    return rt;
  };
  afterEach(async () => {
    for (const rt of runtimes.splice(0)) await rt.stop();
  });

  it("submits nothing for a tick another runtime fired on the lane, its commit not written yet", async () => {
    const key = tickKey(schedule.id, at + 60_000);
    const first = await runtime();
    const job = await first.jobs.submit({ ...schedule.job, idempotencyKey: key });
    // As the server holds it: still `submitting`, its task stored on the lane.
    const stored = memoryServerState(server).records.get("test.read", job.id);
    expect(decodeRecord(stored!.value!)).toMatchObject({ phase: "submitting", lane: true });
    const second = spiedBroker(createMemoryBroker({ server }));
    const rt = await runtime(second.broker);
    await fireTick(second.broker, partsOf(rt).jobs, schedule, key, () => at, 10_000, aheadOfRealServer);
    expect(second.calls.get("createRecord")).toBeUndefined();
    expect(partsOf(rt).jobs.watchedSnapshot(job.id)).toBeUndefined();
    // Its commit is written, as a submit of the key writes it: its submitter, its publish stored
    // but its answer lost, would otherwise roll back a job whose task a worker may run.
    expect(second.calls.get("updateRecord")).toBe(1);
    const after = memoryServerState(server).records.get("test.read", job.id);
    expect(decodeRecord(after!.value!)).toMatchObject({ phase: "committed", status: "running", lane: true });
  });

  it("submits a tick nobody fired", async () => {
    const key = tickKey(schedule.id, at + 120_000);
    const spied = spiedBroker(createMemoryBroker({ server }));
    const rt = await runtime(spied.broker);
    await fireTick(spied.broker, partsOf(rt).jobs, schedule, key, () => at, 10_000, aheadOfRealServer);
    expect(spied.calls.get("createRecord")).toBe(1);
  });

  it("rolls back a submit of the tick that died before its commit, past its deadline and grace, and submits afresh", async () => {
    // Its first submitter died after the record's create: `submitting` for good, no task stored.
    // No admin runtime runs a reaper: the tick's submit waited for that submit, gave up, and the
    // tick never fired.
    const key = tickKey(schedule.id, at + 180_000);
    const broker = createMemoryBroker({ server });
    const dead = await planSubmit({ ...schedule.job, idempotencyKey: key }, 1 << 20, at, true);
    await broker.createRecord(dead.record);
    const rt = await runtime();
    const past = dead.record.commitDeadline + 10_000;
    const fired = fireTick(broker, partsOf(rt).jobs, schedule, key, () => past, 10_000, aheadOfRealServer);
    expect(await within(fired, 3000)).not.toBe("never");
    const after = decodeRecord(memoryServerState(server).records.get("test.read", dead.record.id)!.value!);
    // The oracle: the record as the server holds it, taken over by a new submit of the key.
    expect(after.submitId).not.toBe(dead.record.submitId);
    expect(after.phase).not.toBe("rolledBack");
  });

  it("judges a dead submit of the tick by the server's stamp of its record: one by a clock ten minutes ahead is finished once its window and the grace passed", async () => {
    // Planned and claimed by a runtime ten minutes ahead of this one; the server stored it now.
    const key = tickKey(schedule.id, at + 240_000);
    const broker = createMemoryBroker({ server });
    const dead = await planSubmit({ ...schedule.job, idempotencyKey: key }, 1 << 20, at + 600_000, true);
    await broker.createRecord(dead.record);
    const rt = await runtime();
    // Its window (30 s) and the grace (10 s) on from its write, by this runtime's time; ten
    // minutes short of its deadline as written.
    const past = at + 40_100;
    const fired = fireTick(broker, partsOf(rt).jobs, schedule, key, () => past, 10_000, aheadOfRealServer);
    expect(await within(fired, 3000)).not.toBe("never");
    const after = decodeRecord(memoryServerState(server).records.get("test.read", dead.record.id)!.value!);
    expect(after.submitId).not.toBe(dead.record.submitId);
    expect(after.phase).not.toBe("rolledBack");
  });
});
