/**
 * A receipt's end is on the server's clock, as the instance reads it
 * (receipt-clock.ts): signed so, and with no reading of the server's clock
 * a reserve, a heartbeat or a results POST is a 503 that leases and sends
 * nothing (its end cannot be judged). The broker is a fake that logs every
 * call; test/integration/http-receipt-clock.test.ts runs instances whose
 * clocks disagree on a nats-server.
 */
import { pino } from "pino";
import { expect, it } from "vitest";
import { ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { type Caller, TaskLeases } from "../../src/adapters/http/task-leases.ts";
import type { LeasedTask } from "../../src/adapters/task-leasing.ts";
import type { ServerTime } from "../../src/kernel/clock.ts";
import { fakeLeasePort, runningRecord } from "./fake-lease-port.ts";

const record = runningRecord({ total: 2 });

const W1: Caller = { identity: "w1", allows: () => true };
/** This instance's clock: an hour ahead of the server's. */
const hourAhead = 3600_000;

it("a receipt's end is signed on the server's clock; with that clock unknown nothing is leased or sent", async () => {
  const tasks: LeasedTask[] = [];
  let fetched = 0;
  const { port, calls } = fakeLeasePort({
    getRecord: async () => ({ record }),
    activeJobs: async () => [record],
    fetchTasks: async (_queue, _jobId, max) => {
      fetched++;
      return tasks.splice(0, max);
    },
    fetchLane: async () => [],
    isDeliveryOf: (ref) => ref.startsWith("$JS.ACK.t.j1."),
  });
  let reading: ServerTime | undefined = { at: Date.now(), seenAt: performance.now() };
  const signer = new ReceiptSigner();
  const leases = new TaskLeases(
    { ...port, serverTime: async () => reading },
    { signer, log: pino({ level: "silent" }), now: () => Date.now() + hourAhead },
  );
  for (const i of [0, 1])
    tasks.push({
      ref: `$JS.ACK.t.j1.1.${i + 1}.${i + 1}.0.0`,
      jobId: "j1",
      body: JSON.stringify({ i, p: i }),
      deliveryCount: 1,
    });

  const before = Date.now();
  const [task] = await leases.reserve("j1", 1, W1);
  const x = signer.verify(task?.receipt)?.x ?? 0;
  // On the server's clock: the lease's end less the hour, within the ack wait of its reserve.
  expect(x).toBeGreaterThan(before);
  expect(x).toBeLessThanOrEqual(Date.now() + 10_000);
  expect(Number.isSafeInteger(x)).toBe(true);

  reading = undefined;
  const unavailable = { status: 503, code: "unavailable" };
  await expect(leases.reserve("j1", 1, W1)).rejects.toMatchObject(unavailable);
  await expect(leases.heartbeat("j1", [task!.receipt], W1)).rejects.toMatchObject(unavailable);
  await expect(
    leases.submitResults("j1", [{ receipt: task!.receipt, ok: true, json: "0" }], W1),
  ).rejects.toMatchObject(unavailable);
  expect({ fetched, calls }).toEqual({ fetched: 1, calls: [] });

  // Read again: the receipt is live, by the server's clock, and answered.
  reading = { at: Date.now(), seenAt: performance.now() };
  expect(await leases.heartbeat("j1", [task!.receipt], W1)).toMatchObject([{ status: "extended" }]);
});
