/**
 * A receipt of another submit of its job's key than the record's (the
 * server's store came back empty and the key was submitted again): its
 * answer and its heartbeat are told `expired`, nothing reaches the broker,
 * and the lease's slot under the token's cap is given back at once, not at
 * its end. The broker is a fake that logs every call; the integration test
 * (http-receipt-submit.test.ts) runs the same on a nats-server.
 */
import { pino } from "pino";
import { expect, it } from "vitest";
import { ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { type Caller, TaskLeases } from "../../src/adapters/http/task-leases.ts";
import type { LeasedTask } from "../../src/adapters/task-leasing.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { fakeLeasePort, runningRecord } from "./fake-lease-port.ts";

const record = (submitId: string): JobRecord => runningRecord({ submitId, total: 3 });

const W1: Caller = { identity: "w1", allows: () => true };

it("a receipt of the job's submit before its key was submitted again is expired, sends nothing, frees its slot", async () => {
  let current = record("s1");
  const tasks: LeasedTask[] = [];
  const { port, calls } = fakeLeasePort({
    getRecord: async () => ({ record: current }),
    activeJobs: async () => [current],
    fetchTasks: async (_queue, _jobId, max) => tasks.splice(0, max),
    fetchLane: async () => [],
    isDeliveryOf: (ref) => ref.startsWith("$JS.ACK.t.j1."),
  });
  const offer = (index: number) =>
    tasks.push({
      ref: `$JS.ACK.t.j1.1.${index + 1}.${index + 1}.0.0`,
      jobId: "j1",
      body: JSON.stringify({ i: index, p: index }),
      deliveryCount: 1,
    });
  const log = pino({ level: "silent" });
  // A cap of one lease: a slot not given back is a 429 at the next reserve.
  const leases = new TaskLeases(port, { signer: new ReceiptSigner(), log, maxLeasesPerToken: 1 });

  offer(0);
  const [first] = await leases.reserve("j1", 1, W1);
  current = record("s2");
  expect(await leases.heartbeat("j1", [first!.receipt], W1)).toEqual([{ id: "j1.0", status: "expired" }]);
  offer(1);
  const [second] = await leases.reserve("j1", 1, W1);
  expect(second?.index).toBe(1);
  current = record("s3");
  const answered = await leases.submitResults("j1", [{ receipt: second!.receipt, ok: true, json: "1" }], W1);
  expect(answered).toEqual([{ id: "j1.1", status: "expired" }]);
  offer(2);
  expect((await leases.reserve("j1", 1, W1)).map((t) => t.index)).toEqual([2]);
  // No keep, claim, result or ack for either receipt.
  expect(calls).toEqual([]);
});
