/**
 * The instance's wall clock stepped while a reserve is under way (after its
 * request took the offset to the server's clock, before the lease was
 * timed: a pull waiting out a reconnect, a slow answer): the lease's end is
 * timed on the stepped clock and turned to the server's by the offset from
 * before the step. The ledger is the test's: the fake server delivered the
 * task at a known time with a 10 s ack wait; the server's clock does not
 * step. Time then passes for the instance's clocks and the server's alike
 * (the reading's stamp moved with it); the instance's monotonic clock does
 * not step.
 */
import { pino } from "pino";
import { expect, it } from "vitest";
import { ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { type Caller, TaskLeases } from "../../src/adapters/http/task-leases.ts";
import type { LeasedTask } from "../../src/adapters/task-leasing.ts";
import type { ServerTime } from "../../src/kernel/clock.ts";
import { fakeLeasePort, runningRecord } from "./fake-lease-port.ts";

const record = runningRecord({ total: 1 });
const W1: Caller = { identity: "w1", allows: () => true };
const minute = 60_000;

it("a receipt leased while the instance's clock stepped a minute forward is not taken past the server's ack wait", async () => {
  let passed = 0;
  let stepped = 0;
  const start = Date.now();
  const seenAt = performance.now();
  const task: LeasedTask = {
    ref: "$JS.ACK.t.j1.1.1.1.0.0",
    jobId: "j1",
    body: JSON.stringify({ i: 0, p: 0 }),
    deliveryCount: 1,
  };
  let deliveredAt: number | undefined;
  const { port, calls } = fakeLeasePort({
    getRecord: async () => ({ record }),
    activeJobs: async () => [record],
    fetchTasks: async (_queue, _jobId, _max, pulling) => {
      if (deliveredAt !== undefined) return [];
      // The host's clock is set a minute forward while the pull waits for the connection (NTP,
      // an operator); the pull request is then written, and the server delivers.
      stepped = minute;
      pulling?.();
      deliveredAt = start + passed;
      return [task];
    },
    fetchLane: async () => [],
    isDeliveryOf: (ref) => ref.startsWith("$JS.ACK.t.j1."),
  });
  const signer = new ReceiptSigner();
  // The server's clock: where the host's was before the step, and it does not step.
  const reading = (): ServerTime => ({ at: start + passed, seenAt });
  const leases = new TaskLeases(
    { ...port, serverTime: async () => reading() },
    {
      signer,
      log: pino({ level: "silent" }),
      now: () => start + passed + stepped,
      // The monotonic clock nobody sets: time passes on it, the step does not.
      monotonic: () => start + passed,
    },
  );

  const [leased] = await leases.reserve("j1", 1, W1);
  // The test's ledger: the delivery is the server's to hand again once its ack wait ran out.
  const runsOutOnServer = (deliveredAt ?? 0) + record.settings.ackWaitMs;
  const x = signer.verify(leased?.receipt)?.x ?? Number.NaN;

  // 12 s on: the ack wait ran out on the server 2 s ago; the task may be another worker's.
  passed = 12_000;
  const beat = await leases.heartbeat("j1", [leased!.receipt], W1).then(
    (outcomes) => outcomes.map((o) => o.status),
    (error: { status?: number; code?: string }) => [`${error.status} ${error.code}`],
  );
  expect({ receiptEndPastServerAckWaitMs: Math.max(0, x - runsOutOnServer), beat, calls }).toEqual({
    receiptEndPastServerAckWaitMs: 0,
    beat: ["expired"],
    calls: [],
  });
});
