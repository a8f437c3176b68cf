/**
 * A version 2 receipt (issued before the upgrade: no submit named) is taken
 * for the record's. A first version of receipts naming their submit told a
 * version 2 one by when its lease began (`x` less the lease a job of that
 * ack wait gets, against `record.createdAt`), and a review found this case
 * refused: a lane lease is timed from its pull's sending (`pulling`), and
 * the lane serves whatever is stored when the server takes the pull; a pull
 * sent, then held (a reconnect: the request waits in the client's buffer),
 * meets a job submitted meanwhile through another connection, its record
 * made after the pull's `sentAt`. Its receipt is of the record's submit
 * (the only one there ever was), yet was read as another's: its answer
 * `expired`, its heartbeat too, and the task waited out its lease to run
 * again. The same handout as version 3 is taken. The broker is a fake that
 * logs every call.
 */
import { pino } from "pino";
import { expect, it } from "vitest";
import { type ReceiptClaims, ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { type Caller, TaskLeases } from "../../src/adapters/http/task-leases.ts";
import type { LeasedTask } from "../../src/adapters/task-leasing.ts";
import { type JobRecord, SubmitPhase } from "../../src/kernel/job-record.ts";
import { fakeLeasePort } from "./fake-lease-port.ts";

const laneRecord = (createdAt: number): JobRecord => ({
  v: 1,
  id: "j1",
  queue: "q",
  status: "running",
  phase: SubmitPhase.committed,
  total: 1,
  submitId: "s1",
  lane: true,
  settings: {
    maxFailures: 0,
    ackWaitMs: 30_000,
    maxDeliver: 5,
    backoffMs: [100],
    stallAfterMs: 60_000,
    stalledTimeoutMs: 0,
  },
  counts: { done: 0, failed: 0, dead: 0 },
  createdAt,
  updatedAt: createdAt,
  commitDeadline: createdAt + 1,
});

const W1: Caller = { identity: "w1", allows: () => true };
const signer = new ReceiptSigner("a-receipt-secret-of-at-least-32-bytes");

/** The receipt as version 2 signed it: what the instance handed out before the upgrade. */
const asVersion2 = (receipt: string): string => {
  const { s: _submit, ...claims } = signer.verify(receipt) ?? {};
  return signer.sign({ ...(claims as ReceiptClaims), v: 2 });
};

for (const route of ["results", "heartbeat"] as const)
  it(`${route}: a version 2 lane receipt whose pull was sent just before its job's record was made is the job's`, async () => {
    let clock = 1_000_000;
    let current: JobRecord | undefined;
    const task: LeasedTask = {
      ref: "$JS.ACK.t.lane.1.1.1.0.0",
      jobId: "j1",
      body: JSON.stringify({ i: 0, p: 0 }),
      deliveryCount: 1,
    };
    const { port } = fakeLeasePort({
      getRecord: async () => (current ? { record: current } : undefined),
      activeJobs: async () => (current ? [current] : [laneRecord(clock)]),
      fetchTasks: async () => [],
      fetchLane: async (_queue, _max, pulling) => {
        pulling?.();
        // The pull waits in the client's buffer for 300 ms; the job is submitted meanwhile, its
        // record made 100 ms after the pull was sent, its task stored before the pull is taken.
        clock += 100;
        current = laneRecord(clock);
        clock += 200;
        return [task];
      },
      isDeliveryOf: (ref) => ref.startsWith("$JS.ACK.t.lane."),
    });
    const log = pino({ level: "silent" });
    const leases = new TaskLeases(port, { signer, log, now: () => clock });
    const [leased] = await leases.reserveFromQueue("q", 1, W1);
    expect(leased?.jobId).toBe("j1");
    // Handed out before the upgrade: the same claims, version 2.
    const receipt = asVersion2(leased!.receipt);
    clock += 1_000;
    const told =
      route === "results"
        ? await leases.submitResults("j1", [{ receipt, ok: true, json: '"done"' }], W1)
        : await leases.heartbeat("j1", [receipt], W1);
    expect(told).toMatchObject([{ id: "j1.0", status: route === "results" ? "done" : "extended" }]);
  });
