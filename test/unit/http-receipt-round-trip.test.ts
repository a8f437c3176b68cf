/**
 * A reading of the server's clock that took long (a loaded server or event
 * loop during a lease scan; it is kept up to 5 minutes) moves every receipt
 * an instance signs earlier by its whole round trip, while the worker is
 * told the lease it holds (`leaseMs`) on the instance's own clock. The
 * ledger is the test's: the fake server delivered the task at a known time
 * with a 10 s ack wait, so the delivery is live on it until then. Time
 * passes for the instance's clock and the server's alike (the reading's
 * stamp moved with the instance's clock: the monotonic clock is not needed).
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

it("a heartbeat to the leasing instance well inside the lease the worker was told, the delivery live on the server, is extended", async () => {
  const tasks: LeasedTask[] = [
    { ref: "$JS.ACK.t.j1.1.1.1.0.0", jobId: "j1", body: JSON.stringify({ i: 0, p: 0 }), deliveryCount: 1 },
  ];
  const { port } = fakeLeasePort({
    getRecord: async () => ({ record }),
    activeJobs: async () => [record],
    fetchTasks: async (_queue, _jobId, max) => tasks.splice(0, max),
    fetchLane: async () => [],
    isDeliveryOf: (ref) => ref.startsWith("$JS.ACK.t.j1."),
  });
  // Host and server agree; the reading's answer took 4 s (its stamp fell somewhere in it).
  let passed = 0;
  const start = Date.now();
  const seenAt = performance.now();
  const reading = (): ServerTime => ({ at: start + passed, seenAt, roundTripMs: 4000 });
  const leases = new TaskLeases(
    { ...port, serverTime: async () => reading() },
    { signer: new ReceiptSigner(), log: pino({ level: "silent" }), now: () => start + passed },
  );

  const [task] = await leases.reserve("j1", 1, W1);
  // The test's ledger: delivered at `start`, live on the server until start + 10 s.
  const liveOnServerUntil = start + record.settings.ackWaitMs;
  expect(task?.leaseMs).toBeGreaterThan(8000);

  // 6 s on: 3 s inside the lease the worker was told, 4 s before the server's ack wait runs out.
  passed = 6000;
  expect(start + passed).toBeLessThan(liveOnServerUntil - 3000);
  const beat = await leases.heartbeat("j1", [task!.receipt], W1).then(
    (outcomes) => outcomes.map((o) => o.status),
    (error: { status?: number; message?: string }) => `${error.status}: ${error.message}`,
  );
  expect(beat).toEqual(["extended"]);
});
