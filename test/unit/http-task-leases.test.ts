import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { LeaseLimits } from "../../src/adapters/http/lease-port.ts";
import { ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import type { ResultItem } from "../../src/adapters/http/request-bodies.ts";
import { type Caller, type LeasePort, TaskLeases } from "../../src/adapters/http/task-leases.ts";
import type { LeasedTask, LeaseSettle, RecordedAnswer } from "../../src/adapters/task-leasing.ts";
import { ConnectionUnavailable, OperationTimeout } from "../../src/kernel/errors.ts";
import { type JobRecord, laneMaxDeliver, SubmitPhase } from "../../src/kernel/job-record.ts";
import { delay, gate } from "../harness/wait.ts";
import { runningRecord } from "./fake-lease-port.ts";

const record = (id: string, over: Partial<JobRecord> = {}): JobRecord => runningRecord({ id, ...over });

/** A job on its queue's lane: one task, the lane's ack wait. */
const laneRecord = (id: string, over: Partial<JobRecord> = {}): JobRecord => {
  const base = record(id, { lane: true, total: 1 });
  return { ...base, settings: { ...base.settings, ackWaitMs: 30_000 }, ...over };
};

/**
 * A broker that records every call in order; tasks are `{i}` bodies with
 * made-up reply subjects: `$JS.ACK.t.<jobId>.…` for a job's own consumer,
 * `$JS.ACK.t.lane.<queue>.…` for its queue's lane.
 */
const fakePort = (records: JobRecord[]) => {
  const calls: string[] = [];
  const byId = new Map(records.map((r) => [r.id, r]));
  const queues = new Map(records.map((r) => [r.id, [] as LeasedTask[]]));
  const lanes = new Map<string, LeasedTask[]>();
  let laneSeq = 0;
  let publishFails = 0;
  let releaseDelayMs = 0;
  let publishDelayMs = 0;
  let publishHeld: Promise<void> | undefined;
  /** The broker's record of answers: survives a new TaskLeases (an API restart). */
  const answers = new Map<string, { answer: RecordedAnswer; revision: number }>();
  let revision = 0;
  /** Run as a job's record is read, or its tasks fetched: what they return is thrown (set by a test). */
  const failing = {
    reads: new Map<string, () => unknown>(),
    fetches: new Map<string, () => unknown>(),
  };
  const port: LeasePort = {
    getRecord: async (id) => {
      const error = failing.reads.get(id)?.();
      if (error !== undefined) throw error;
      return byId.has(id) ? { record: byId.get(id)! } : undefined;
    },
    activeJobs: async () => [...byId.values()],
    fetchTasks: async (_queue, jobId, max) => {
      calls.push(`fetch ${jobId} ${max}`);
      const error = failing.fetches.get(jobId)?.();
      if (error !== undefined) throw error;
      return (queues.get(jobId) ?? []).splice(0, max);
    },
    fetchLane: async (queue, max) => {
      calls.push(`fetch lane ${queue} ${max}`);
      return (lanes.get(queue) ?? []).splice(0, max);
    },
    settle: async (settles: readonly LeaseSettle[]) => {
      for (const s of settles)
        calls.push(`${s.action}${s.action === "nak" ? `(${s.delayMs})` : ""} ${s.ref}`);
    },
    claimAnswer: async (ref, digest) => {
      const found = answers.get(ref);
      if (found) return { claimed: false, answer: found.answer };
      answers.set(ref, { answer: { status: "pending", digest, at: 0 }, revision: ++revision });
      return { claimed: true, revision };
    },
    answerOf: async (ref) => answers.get(ref)?.answer,
    recordAnswer: async (ref, answer, rev) => {
      if (answers.get(ref)?.revision !== rev) throw new Error("claim lost");
      answers.set(ref, { answer, revision: ++revision });
    },
    releaseAnswer: async (ref, rev) => {
      if (releaseDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, releaseDelayMs));
      if (answers.get(ref)?.revision === rev) answers.delete(ref);
    },
    publishResults: async (_queue, jobId, body, msgId) => {
      if (publishDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, publishDelayMs));
      await publishHeld;
      if (publishFails > 0) {
        publishFails--;
        throw new Error("publish timed out");
      }
      calls.push(`publish ${jobId} ${body} ${msgId.startsWith(`${jobId}.http.`)}`);
    },
    isDeliveryOf: (ref, job) =>
      ref.startsWith(job.lane ? `$JS.ACK.t.lane.${job.queue}.` : `$JS.ACK.t.${job.id}.`),
    storeDeadLetter: async (letter) => {
      calls.push(`dead-letter ${letter.jobId} ${letter.index} ${letter.deliveries} ${letter.error}`);
    },
  };
  const offer = (jobId: string, index: number, delivery = 1) =>
    queues.get(jobId)!.push({
      ref: `$JS.ACK.t.${jobId}.${delivery}.${index + 1}.${index + 1}.0.0`,
      jobId,
      body: JSON.stringify({ i: index, p: { n: index } }),
      deliveryCount: delivery,
    });
  /** A lane job's one task on the lane of `queue` (its job may be unknown). */
  const offerLane = (jobId: string, delivery = 1, queue = "q") => {
    const lane = lanes.get(queue) ?? [];
    lanes.set(queue, lane);
    laneSeq++;
    lane.push({
      ref: `$JS.ACK.t.lane.${queue}.${delivery}.${laneSeq}.${laneSeq}.0.0`,
      jobId,
      body: JSON.stringify({ i: 0, p: { job: jobId } }),
      deliveryCount: delivery,
    });
  };
  return {
    port,
    calls,
    offer,
    offerLane,
    byId,
    failing,
    failNextPublishes: (n: number) => (publishFails = n),
    delayPublishes: (ms: number) => (publishDelayMs = ms),
    /** Publishes wait until the returned function is called (a slow store, however slow the test runs). */
    holdPublishes: (): (() => void) => {
      const held = gate();
      publishHeld = held.opened;
      return held.open;
    },
    /** An answer claim's give-back goes to the server: answered a turn of the event loop later. */
    delayReleases: (ms: number) => (releaseDelayMs = ms),
  };
};

const W1: Caller = { identity: "w1", allows: () => true };
const W2: Caller = { identity: "w2", allows: (queue) => queue === "other" };

const setup = (records = [record("j1"), record("j2")], maxLeasesPerToken = 100, limits?: LeaseLimits) => {
  const fake = fakePort(records);
  let now = 1_000_000;
  const signer = new ReceiptSigner();
  const logs: { msg: string; [key: string]: unknown }[] = [];
  const log = pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  /** An instance of the API (`aheadMs`: its clock that far ahead of the first one's). */
  const make = (aheadMs = 0) =>
    new TaskLeases(limits ? { ...fake.port, limits } : fake.port, {
      signer,
      log,
      now: () => now + aheadMs,
      jobListTtlMs: 0,
      maxLeasesPerToken,
    });
  return { ...fake, logs, leases: make(), restart: make, advance: (ms: number) => (now += ms) };
};

/** Limits that admit every slot, with the leases whose concurrency permit is held (bound, not ended). */
const heldPermits = () => {
  const held = new Set<string>();
  const limits: LeaseLimits = {
    admit: async (_queue, max) => ({
      slots: max,
      bind: (leases) => {
        for (const l of leases) held.add(l.ref);
      },
    }),
    extend: () => undefined,
    end: (ref) => {
      held.delete(ref);
    },
    follow: () => () => undefined,
  };
  return { limits, held };
};

const ok = (receipt: string, value: unknown): ResultItem => ({
  receipt,
  ok: true,
  json: JSON.stringify(value),
});
const err = (receipt: string, message: string, permanent = false): ResultItem => ({
  receipt,
  ok: false,
  message,
  permanent,
});

describe("TaskLeases", () => {
  it("stores the results, and only after that acks; errors term (permanent) or nak with the job's backoff", async () => {
    const t = setup();
    for (const i of [0, 1, 2]) t.offer("j1", i);
    const tasks = await t.leases.reserve("j1", 5, W1);
    expect(tasks.map((x) => [x.id, x.index, x.attempt, x.payload, x.leaseMs])).toEqual([
      ["j1.0", 0, 1, { n: 0 }, 9000],
      ["j1.1", 1, 1, { n: 1 }, 9000],
      ["j1.2", 2, 1, { n: 2 }, 9000],
    ]);
    t.calls.length = 0;
    const outcomes = await t.leases.submitResults(
      "j1",
      [ok(tasks[0]!.receipt, 42), err(tasks[1]!.receipt, "bad input", true), err(tasks[2]!.receipt, "busy")],
      W1,
    );
    expect(outcomes).toEqual([
      { id: "j1.0", status: "done" },
      { id: "j1.1", status: "failed" },
      { id: "j1.2", status: "retry", retryInMs: 100 },
    ]);
    expect(t.calls).toEqual([
      'publish j1 [{"i":0,"ok":true,"r":42},{"i":1,"ok":false,"e":"bad input"}] true',
      "ack $JS.ACK.t.j1.1.1.1.0.0",
      "term $JS.ACK.t.j1.1.2.2.0.0",
      "nak(100) $JS.ACK.t.j1.1.3.3.0.0",
    ]);
  });

  it("the last delivery's error is a dead result", async () => {
    const t = setup();
    t.offer("j1", 4, 3);
    const [task] = await t.leases.reserve("j1", 1, W1);
    await expect(t.leases.submitResults("j1", [err(task!.receipt, "still busy")], W1)).resolves.toEqual([
      { id: "j1.4", status: "dead" },
    ]);
    // The dead letter first (the payload is gone once termed), then the dead result, then the term.
    expect(t.calls.slice(-3)).toEqual([
      "dead-letter j1 4 3 still busy (after 3 deliveries)",
      'publish j1 [{"i":4,"ok":false,"e":"still busy (after 3 deliveries)","dead":true}] true',
      expect.stringMatching(/^term /),
    ]);
  });

  it("a receipt posted twice, or twice in one request, is settled once", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.calls.length = 0;
    const [a, b] = await Promise.all([
      t.leases.submitResults("j1", [ok(task!.receipt, 1), ok(task!.receipt, 1)], W1),
      t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1),
    ]);
    expect(a).toEqual([
      { id: "j1.0", status: "done" },
      { id: "j1.0", status: "done", duplicate: true },
    ]);
    expect(b).toEqual([{ id: "j1.0", status: "done", duplicate: true }]);
    expect(t.calls.filter((c) => c.startsWith("ack"))).toHaveLength(1);
    expect(t.calls.filter((c) => c.startsWith("publish"))).toHaveLength(1);
  });

  it("a failed publish acks nothing and leaves the receipt usable; the retry stores it under the same message id", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.calls.length = 0;
    t.failNextPublishes(1);
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).rejects.toThrow(
      "publish timed out",
    );
    expect(t.calls).toEqual([]);
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "done" },
    ]);
    expect(t.calls).toHaveLength(2);
  });

  it("a receipt twice in one request whose publish fails: the request fails, and nothing is left unhandled", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    // The second copy's outcome is the first's, which fails; awaited only after the claim's
    // give-back, a later turn: a rejection nobody handled by then ends the process (Node's default).
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      t.failNextPublishes(1);
      t.delayReleases(5);
      // Fails (its second copy's outcome is the first's: a 503), the receipt still usable.
      await expect(
        t.leases.submitResults("j1", [ok(task!.receipt, 1), ok(task!.receipt, 1)], W1),
      ).rejects.toBeDefined();
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  it("an expired receipt does nothing; a heartbeat before expiry extends it with a fresh receipt", async () => {
    const t = setup();
    t.offer("j1", 0);
    t.offer("j1", 1);
    const [first, second] = await t.leases.reserve("j1", 2, W1);
    t.advance(8000);
    const [beat] = await t.leases.heartbeat("j1", [second!.receipt], W1);
    expect(beat).toMatchObject({ id: "j1.1", status: "extended", leaseMs: 9000 });
    t.advance(2000);
    t.calls.length = 0;
    const receipt = beat?.status === "extended" ? beat.receipt : "";
    await expect(t.leases.submitResults("j1", [ok(first!.receipt, 1), ok(receipt, 2)], W1)).resolves.toEqual([
      { id: "j1.0", status: "expired" },
      { id: "j1.1", status: "done" },
    ]);
    expect(t.calls).toEqual(['publish j1 [{"i":1,"ok":true,"r":2}] true', "ack $JS.ACK.t.j1.1.2.2.0.0"]);
    await expect(t.leases.heartbeat("j1", [first!.receipt, receipt], W1)).resolves.toEqual([
      { id: "j1.0", status: "expired" },
      { id: "j1.1", status: "settled" },
    ]);
  });

  // The server starts a delivery's ack wait once it has the pull. Timed from before a pull that
  // first waited for the connection (up to the operation's deadline), a receipt came with that much
  // less lease, or none (found by a review). Timed from the pull's answer, it would outlast the
  // server's: the holder could then settle a delivery the server had handed to another worker.
  it("a reserve's lease is timed from its pull's sending, not from before a wait for the connection", async () => {
    const t = setup([record("j1"), laneRecord("L1", { createdAt: 2 })]);
    t.offer("j1", 0);
    t.offerLane("L1");
    const { fetchTasks, fetchLane } = t.port;
    // Each pull waits 9.5 s for the connection, is sent, and is answered 200 ms later.
    const connecting = <A>(pull: () => Promise<A>, pulling?: () => void) => {
      t.advance(9500);
      pulling?.();
      t.advance(200);
      return pull();
    };
    t.port.fetchTasks = (queue, jobId, max, pulling?: () => void) =>
      connecting(() => fetchTasks(queue, jobId, max), pulling);
    t.port.fetchLane = (queue, max, pulling?: () => void) => connecting(() => fetchLane(queue, max), pulling);
    // The job's ack wait is 10 s, less 1 s of margin: 9 s from the pull's sending, 200 ms of it spent.
    expect((await t.leases.reserve("j1", 1, W1)).map((x) => x.leaseMs)).toEqual([8800]);
    // The lane's is 30 s, less 2 s (j1's consumer is asked first, now empty).
    expect((await t.leases.reserveFromQueue("q", 1, W1)).map((x) => [x.id, x.leaseMs])).toEqual([
      ["L1.0", 27_800],
    ]);
  });

  // Its lease may have ended meanwhile, its task delivered to another worker: a +WPI or an ack
  // sent on this receipt's delivery would then keep or settle that worker's (JetStream answers a
  // delivery by its stream sequence). Found by a review: the expiry was checked at the request's
  // start only.
  it("a heartbeat whose reads take it past the receipt's expiry answers expired, and extends nothing", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.advance(8500); // 500 ms before the receipt's end
    const answerOf = t.port.answerOf;
    t.port.answerOf = async (ref) => {
      t.advance(1000); // a read slowed by a reconnect
      return answerOf(ref);
    };
    t.calls.length = 0;
    await expect(t.leases.heartbeat("j1", [task!.receipt], W1)).resolves.toEqual([
      { id: "j1.0", status: "expired" },
    ]);
    expect(t.calls).toEqual([]);
  });

  it("results whose claim takes them past the receipt's expiry answer expired: nothing stored or acked", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.advance(8500);
    const claimAnswer = t.port.claimAnswer;
    t.port.claimAnswer = async (ref, digest) => {
      t.advance(1000);
      return claimAnswer(ref, digest);
    };
    t.calls.length = 0;
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "expired" },
    ]);
    expect(t.calls).toEqual([]);
    // Its claim given back: the delivery has no answer recorded.
    expect(await t.port.answerOf("$JS.ACK.t.j1.1.1.1.0.0")).toBeUndefined();
  });

  it("a POST whose settle failed, retried, counts its answer once in the metrics (once it is settled)", async () => {
    // Counted as the results were stored, before the settle: the retry stored them again (the
    // server keeping one by its message id) and counted them again (found by a review).
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    const counted: string[] = [];
    t.port.answered = (_queue, status) => void counted.push(status);
    const settle = t.port.settle;
    let fail = true;
    t.port.settle = async (settles) => {
      if (fail && settles.some((x) => x.action === "ack")) {
        fail = false;
        throw new OperationTimeout({ message: "no answer", operation: "settle", timeoutMs: 1000 });
      }
      return settle(settles);
    };
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).rejects.toBeDefined();
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "done" },
    ]);
    expect(counted).toEqual(["done"]);
  });

  it("a retry (nak) whose settle's outcome is unknown is taken as sent, never sent again: the task comes back once", async () => {
    // The nak may have reached the server (the flush failed after the publish went out): its task is
    // then delivered to another worker, and a nak sent again by the retried POST would hand that
    // worker's delivery back too (JetStream answers a delivery by its stream sequence): the task run
    // twice at once. Not sent again, it comes back by the nak or, had the nak been lost, at its
    // lease's end.
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    const settle = t.port.settle;
    let fail = true;
    t.port.settle = async (settles) => {
      await settle(settles);
      if (fail && settles.some((x) => x.action === "nak")) {
        fail = false;
        throw new OperationTimeout({ message: "no answer", operation: "settle", timeoutMs: 1000 });
      }
    };
    // Answered: the retry is decided either way. A client that retries all the same (its answer lost)
    // is told the same, and nothing is sent.
    for (let k = 0; k < 2; k++)
      await expect(t.leases.submitResults("j1", [err(task!.receipt, "busy")], W1)).resolves.toMatchObject([
        { id: "j1.0", status: "retry" },
      ]);
    expect(t.calls.filter((c) => c.startsWith("nak"))).toEqual(["nak(100) $JS.ACK.t.j1.1.1.1.0.0"]);
  });

  it("a retry (nak) surely not sent (no connection) is given back: the POST tried again sends it", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    const settle = t.port.settle;
    let fail = true;
    const limits: Array<number | undefined> = [];
    t.port.settle = async (settles, notAfter) => {
      limits.push(notAfter);
      if (fail && settles.some((x) => x.action === "nak")) {
        fail = false;
        throw new ConnectionUnavailable({ message: "not connected" });
      }
      return settle(settles);
    };
    await expect(t.leases.submitResults("j1", [err(task!.receipt, "busy")], W1)).rejects.toMatchObject({
      _tag: "ConnectionUnavailable",
    });
    await expect(t.leases.submitResults("j1", [err(task!.receipt, "busy")], W1)).resolves.toMatchObject([
      { id: "j1.0", status: "retry" },
    ]);
    expect(t.calls.filter((c) => c.startsWith("nak"))).toEqual(["nak(100) $JS.ACK.t.j1.1.1.1.0.0"]);
    // Each settle is bounded by the delivery's lease, on the wall clock (9 s left of it here).
    for (const notAfter of limits) expect((notAfter ?? 0) - Date.now()).toBeGreaterThan(8000);
  });

  it("while its results are being published, the delivery's lease is kept (+WPI), then it is acked", async () => {
    // An ack wait of 90 ms: kept every 30 ms; the publish takes 200 ms (retried through a leader election).
    const t = setup([record("j1", { settings: { ...record("j1").settings, ackWaitMs: 90 } })]);
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.calls.length = 0;
    t.delayPublishes(200);
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "done" },
    ]);
    const ref = "$JS.ACK.t.j1.1.1.1.0.0";
    const kept = t.calls.filter((c) => c === `working ${ref}`);
    expect(kept.length).toBeGreaterThanOrEqual(3);
    // Every keep came before the result was stored and the delivery acked.
    expect(t.calls.slice(kept.length)).toEqual(['publish j1 [{"i":0,"ok":true,"r":1}] true', `ack ${ref}`]);
  });

  it("results stored past the delivery's lease, its keeps not heard by the server: never acked (another worker may hold it now)", async () => {
    // The connection drops while the results are stored: no +WPI reaches the server, the publish
    // waits out the reconnect past the lease's end, and the server hands the task to another
    // worker. JetStream answers a delivery by its stream sequence: an ack here ends that one's.
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.advance(7000);
    const settle = t.port.settle;
    t.port.settle = async (settles) => {
      if (settles.every((x) => x.action === "working")) throw new Error("connection lost");
      return settle(settles);
    };
    const publishResults = t.port.publishResults;
    t.port.publishResults = async (...args) => {
      t.advance(15_000);
      return publishResults(...args);
    };
    t.calls.length = 0;
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "expired" },
    ]);
    expect(t.calls).toEqual(['publish j1 [{"i":0,"ok":true,"r":1}] true']);
  });

  it("results stored past the delivery's lease, its keeps sent only once back (after that end): never acked", async () => {
    // The keeps wait for the connection (as an operation does, up to its deadline) and go out
    // once it is back, past the lease's end: by then they keep the next holder's delivery.
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.advance(7000);
    const settle = t.port.settle;
    let back: () => void = () => undefined;
    const reconnected = new Promise<void>((resolve) => {
      back = resolve;
    });
    t.port.settle = async (settles) => {
      if (settles.every((x) => x.action === "working")) await reconnected;
      return settle(settles);
    };
    const publishResults = t.port.publishResults;
    t.port.publishResults = async (...args) => {
      // Past the receipt's end, within the lease the waiting keep would give from when it was sent.
      t.advance(3000);
      back();
      await reconnected;
      // The keep waiting since the lease's last seconds goes out now, before the results are in.
      await new Promise((resolve) => setImmediate(resolve));
      return publishResults(...args);
    };
    const leases = t.restart();
    t.calls.length = 0;
    await expect(leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "expired" },
    ]);
    expect(t.calls.filter((c) => c.startsWith("ack") || c.startsWith("nak"))).toEqual([]);
  });

  it("results stored past the receipt's first end, their keeps heard: acked", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.advance(7000);
    const publishResults = t.port.publishResults;
    t.port.publishResults = async (...args) => {
      // Past the receipt's end, within the lease its keep (sent at once: it ends within a third
      // of the ack wait) gave it.
      t.advance(4000);
      return publishResults(...args);
    };
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "done" },
    ]);
    expect(t.calls.at(-1)).toBe("ack $JS.ACK.t.j1.1.1.1.0.0");
  });

  it("while its results are being published past its lease's end, its permit stays held", async () => {
    // An ack wait of 90 ms (a lease of 81): the publish takes 300 ms. Another instance's permit ledger.
    const permits = new Map<string, number>();
    const limits: LeaseLimits = {
      admit: async (_queue, max) => ({
        slots: max,
        bind: (leases) => {
          for (const l of leases) permits.set(l.ref, l.until);
        },
      }),
      extend: (ref, until) => {
        if (permits.has(ref)) permits.set(ref, until);
      },
      end: (ref) => {
        permits.delete(ref);
      },
      follow: () => () => undefined,
    };
    const t = setup([record("j1", { settings: { ...record("j1").settings, ackWaitMs: 90 } })], 100, limits);
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    const ref = "$JS.ACK.t.j1.1.1.1.0.0";
    const stored = t.holdPublishes();
    const answering = t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1);
    // This instance's clock moves with the real one (the keeper's timer), 200 ms: past the lease's end.
    let now = 0;
    for (let step = 0; step < 8; step++) {
      await delay(25);
      now = t.advance(25);
    }
    // Still running: the permit is held past now (before the fix: given back at the lease's end,
    // and a second task could start at the cap).
    expect(permits.get(ref)).toBeGreaterThan(now);
    stored();
    await expect(answering).resolves.toEqual([{ id: "j1.0", status: "done" }]);
    expect(permits.has(ref)).toBe(false);
  });

  it("a POST that fails part way gives back the permits of the tasks it answered", async () => {
    const { limits, held: permits } = heldPermits();
    const t = setup([record("j1")], 100, limits);
    t.offer("j1", 0);
    // On its last delivery: its error is a dead letter, whose store fails.
    t.offer("j1", 1, 3);
    const [a, b] = await t.leases.reserve("j1", 2, W1);
    expect(permits.size).toBe(2);
    // Task 0 is acked; task 1's dead letter cannot be stored: the request fails. (A nak whose settle
    // failed would be taken as sent, above.)
    t.port.storeDeadLetter = async () => {
      throw new Error("connection lost");
    };
    // The port as an instance takes it (a copy with its limits): made again with the failing store.
    await expect(
      t.restart().submitResults("j1", [ok(a!.receipt, 0), err(b!.receipt, "still busy")], W1),
    ).rejects.toThrow(/connection lost/);
    // Task 0 answered and acked: its permit back (it was kept to its lease's end, 10 s here).
    expect(permits.has("$JS.ACK.t.j1.1.1.1.0.0")).toBe(false);
    // Task 1 not settled: its permit stays with its lease, for the POST tried again.
    expect(permits.has("$JS.ACK.t.j1.3.2.2.0.0")).toBe(true);
  });

  it("a heartbeat, or the same POST through another instance, while the results are stored leaves the permit held", async () => {
    const { limits, held: permits } = heldPermits();
    const t = setup([record("j1")], 100, limits);
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    const ref = "$JS.ACK.t.j1.1.1.1.0.0";
    const stored = t.holdPublishes();
    const answering = t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1);
    await delay(25);
    // The worker's heartbeat timer still runs: told the lease is settled, but the task's answer is
    // not stored yet (before the fix: its permit was given back, and another task could start).
    await expect(t.leases.heartbeat("j1", [task!.receipt], W1)).resolves.toEqual([
      { id: "j1.0", status: "settled" },
    ]);
    expect(permits.has(ref)).toBe(true);
    // The same POST retried through another instance finds the answer pending: same.
    await expect(t.restart().submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "pending", duplicate: true },
    ]);
    expect(permits.has(ref)).toBe(true);
    // Retried through an instance that finds its receipt's lease over (its clock 20 s ahead; the
    // first request keeps the delivery meanwhile): told expired, but the answer being stored
    // elsewhere still holds the permit.
    await expect(t.restart(20_000).submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "expired" },
    ]);
    await expect(t.restart(20_000).heartbeat("j1", [task!.receipt], W1)).resolves.toEqual([
      { id: "j1.0", status: "settled" },
    ]);
    expect(permits.has(ref)).toBe(true);
    stored();
    await expect(answering).resolves.toEqual([{ id: "j1.0", status: "done" }]);
    expect(permits.has(ref)).toBe(false);
  });

  it("a delivery whose lease is near its end when its answer comes is kept at once, before its result is stored", async () => {
    // An ack wait of 90 ms (a lease of 81): kept every 30 ms; the answer comes 21 ms before the lease's end.
    const t = setup([record("j1", { settings: { ...record("j1").settings, ackWaitMs: 90 } })]);
    t.offer("j1", 0);
    const [near] = await t.leases.reserve("j1", 1, W1);
    t.advance(60);
    t.calls.length = 0;
    await t.leases.submitResults("j1", [ok(near!.receipt, 1)], W1);
    const ref = "$JS.ACK.t.j1.1.1.1.0.0";
    expect(t.calls).toEqual([`working ${ref}`, 'publish j1 [{"i":0,"ok":true,"r":1}] true', `ack ${ref}`]);
  });

  it("a POST retried after its lease ended finds the answer its first try stored: a duplicate, not expired", async () => {
    const t = setup();
    t.offer("j1", 0);
    t.offer("j1", 1);
    const [first, second] = await t.leases.reserve("j1", 2, W1);
    await expect(t.leases.submitResults("j1", [ok(first!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "done" },
    ]);
    t.advance(10_000);
    t.calls.length = 0;
    // The same answer again (its first response lost), another one, and a receipt never answered.
    await expect(
      t.leases.submitResults(
        "j1",
        [ok(first!.receipt, 1), ok(first!.receipt, 7), ok(second!.receipt, 2)],
        W1,
      ),
    ).resolves.toEqual([
      { id: "j1.0", status: "done", duplicate: true },
      { id: "j1.0", status: "conflict", answered: "done" },
      { id: "j1.1", status: "expired" },
    ]);
    expect(t.calls).toEqual([]);
  });

  it("a POST retried after it finished the job finds the answers it stored: duplicates, not 410", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "done" },
    ]);
    // That answer was the job's last: its supervisor recorded its end.
    t.byId.set("j1", record("j1", { status: "succeeded" }));
    t.calls.length = 0;
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 1)], W1)).resolves.toEqual([
      { id: "j1.0", status: "done", duplicate: true },
    ]);
    // Another answer is a conflict; a receipt never answered is told the job is over.
    await expect(t.leases.submitResults("j1", [ok(task!.receipt, 2)], W1)).resolves.toEqual([
      { id: "j1.0", status: "conflict", answered: "done" },
    ]);
    t.offer("j2", 0);
    const [other] = await t.leases.reserve("j2", 1, W1);
    t.byId.set("j2", record("j2", { status: "failed" }));
    await expect(t.leases.submitResults("j2", [ok(other!.receipt, 1)], W1)).rejects.toMatchObject({
      status: 410,
      code: "job_finished",
    });
    expect(t.calls.filter((c) => !c.startsWith("fetch"))).toEqual([]);
  });

  it("refuses forged receipts, receipts of another job, unknown and finished jobs before touching anything", async () => {
    const t = setup([record("j1"), record("j2"), record("done", { status: "succeeded" })]);
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    t.calls.length = 0;
    await expect(t.leases.submitResults("j2", [ok(task!.receipt, 1)], W1)).rejects.toMatchObject({
      status: 400,
      code: "receipt_wrong_job",
    });
    await expect(t.leases.submitResults("j1", [ok(`${task!.receipt}x`, 1)], W1)).rejects.toMatchObject({
      status: 400,
      code: "invalid_receipt",
    });
    await expect(t.leases.reserve("nope", 1, W1)).rejects.toMatchObject({
      status: 404,
      code: "job_not_found",
    });
    await expect(t.leases.reserve("done", 1, W1)).rejects.toMatchObject({
      status: 410,
      code: "job_finished",
    });
    expect(t.calls).toEqual([]);
  });

  it("reserves across the queue's active jobs, starting with another job each time", async () => {
    const t = setup([
      record("a", { createdAt: 1 }),
      record("b", { createdAt: 2 }),
      record("c", { createdAt: 3, status: "failed" }),
    ]);
    for (const i of [0, 1, 2, 3]) {
      t.offer("a", i);
      t.offer("b", i);
    }
    const first = await t.leases.reserveFromQueue("q", 3, W1);
    const second = await t.leases.reserveFromQueue("q", 3, W1);
    expect(first.map((x) => x.id)).toEqual(["a.0", "a.1", "a.2"]);
    expect(second.map((x) => x.id)).toEqual(["b.0", "b.1", "b.2"]);
    expect(await t.leases.reserveFromQueue("other", 3, W1)).toEqual([]);
    expect(t.calls.some((c) => c.startsWith("fetch c"))).toBe(false);
  });

  it("reserves from the higher-priority job first; every 8th pull of the queue is the plain round robin", async () => {
    const priority = (p: number) => ({ settings: { ...record("x").settings, priority: p } });
    const t = setup([record("low", { createdAt: 1 }), record("high", { createdAt: 2, ...priority(10) })]);
    for (let i = 0; i < 20; i++) {
      t.offer("low", i);
      t.offer("high", i);
    }
    const firsts: string[] = [];
    for (let n = 0; n < 16; n++) firsts.push((await t.leases.reserveFromQueue("q", 1, W1))[0]!.jobId);
    // Pulls 8 and 16 (turns 7 and 15): the round robin of both, low first then high.
    expect(firsts).toEqual([...Array(7).fill("high"), "low", ...Array(7).fill("high"), "high"]);
    // A pull for more than the high job still holds (5 of 20) takes the rest from the low one.
    const more = await t.leases.reserveFromQueue("q", 8, W1);
    expect(more.map((x) => x.jobId)).toEqual([...Array(5).fill("high"), ...Array(3).fill("low")]);
  });

  // A queue's turn was kept for good (a cursor per queue that ever had a job running): an instance
  // serving queues made and dropped over time held one for each, without end (found by a review).
  it("a queue with no job running at a listing forgets its turn: its next jobs' round robin starts again", async () => {
    const priority = (p: number) => ({ settings: { ...record("x").settings, priority: p } });
    const t = setup([
      record("low", { createdAt: 1 }),
      record("high", { createdAt: 2, ...priority(10) }),
      record("low2", { createdAt: 3, status: "queuing" }),
      record("high2", { createdAt: 4, status: "queuing", ...priority(10) }),
    ]);
    for (let i = 0; i < 8; i++) for (const id of ["low", "high", "low2", "high2"]) t.offer(id, i);
    const firstOf = async () => (await t.leases.reserveFromQueue("q", 1, W1))[0]?.jobId;
    for (let n = 0; n < 3; n++) expect(await firstOf()).toBe("high");
    // Both end; a reserve from another queue lists the jobs again, none of q running.
    for (const id of ["low", "high"]) t.byId.set(id, { ...t.byId.get(id)!, status: "succeeded" });
    t.advance(1);
    expect(await t.leases.reserveFromQueue("other", 1, W1)).toEqual([]);
    for (const id of ["low2", "high2"]) t.byId.set(id, { ...t.byId.get(id)!, status: "running" });
    t.advance(1);
    const firsts: (string | undefined)[] = [];
    for (let n = 0; n < 8; n++) {
      firsts.push(await firstOf());
      t.advance(1);
    }
    // Its 8th pull is the plain round robin again (the 5th, had its turn been kept).
    expect(firsts).toEqual([...Array(7).fill("high2"), "low2"]);
  });

  describe("a reserve from a queue that fails part way", () => {
    const timeout = () =>
      new OperationTimeout({ message: "timed out", operation: "job.tasks.fetch", timeoutMs: 2000 });
    const unreadable = () => new Error("unsupported job record version 2");

    it.each([
      ["its record cannot be decoded", "reads", unreadable],
      ["its record's read times out", "reads", timeout],
      ["its tasks' fetch times out", "fetches", timeout],
    ] as const)(
      "a job that fails (%s) is skipped: the tasks leased before and after it are handed out",
      async (_what, where, error) => {
        const t = setup([
          record("j1", { createdAt: 1 }),
          record("j2", { createdAt: 2 }),
          record("j3", { createdAt: 3 }),
        ]);
        for (const id of ["j1", "j2", "j3"]) t.offer(id, 0);
        t.offer("j1", 1);
        t.failing[where].set("j2", error);
        // Before: the request failed (a 5xx), and j1's tasks stayed leased, held by nobody, never nak'd.
        const tasks = await t.leases.reserveFromQueue("q", 5, W1).catch((e: unknown) => e);
        expect(tasks).toEqual([
          expect.objectContaining({ id: "j1.0" }),
          expect.objectContaining({ id: "j1.1" }),
          expect.objectContaining({ id: "j3.0" }),
        ]);
        expect(t.calls.filter((c) => !c.startsWith("fetch"))).toEqual([]);
      },
    );

    it("a record that cannot be decoded is said once at warn, not at every reserve; a timeout each time", async () => {
      const t = setup([record("j1", { createdAt: 1 }), record("j2", { createdAt: 2 })]);
      t.failing.reads.set("j2", unreadable);
      for (let n = 0; n < 3; n++) await t.leases.reserveFromQueue("q", 5, W1);
      const said = () => t.logs.filter((l) => l.msg.startsWith("job's record not read"));
      expect(said()).toEqual([expect.objectContaining({ level: 40, jobId: "j2", queue: "q" })]);
      t.failing.reads.set("j2", timeout);
      for (let n = 0; n < 2; n++) await t.leases.reserveFromQueue("q", 5, W1);
      expect(said()).toHaveLength(3);
    });

    it("a worker gone away between two jobs is handed nothing: what was leased goes back at once", async () => {
      const t = setup([record("j1", { createdAt: 1 }), record("j2", { createdAt: 2 })], 3);
      t.offer("j1", 0);
      t.offer("j1", 1);
      t.offer("j2", 0);
      const gone = new AbortController();
      // The worker goes away while j2's record is read, after j1's tasks were leased and signed.
      t.failing.reads.set("j2", () => void gone.abort());
      // Before: j1's two tasks were returned (to nobody) and left leased until their ack wait.
      expect(await t.leases.reserveFromQueue("q", 5, W1, gone.signal)).toEqual([]);
      expect(t.calls).toEqual([
        "fetch j1 3",
        "nak(0) $JS.ACK.t.j1.1.1.1.0.0",
        "nak(0) $JS.ACK.t.j1.1.2.2.0.0",
      ]);
      // Nothing of it counts against the token's cap (3): it holds no lease.
      t.failing.reads.delete("j2");
      t.offer("j1", 0, 2);
      expect(await t.leases.reserveFromQueue("q", 5, W1)).toHaveLength(2);
    });

    it("a worker gone away during a fetch: its last deliveries are put back, the others nak'd", async () => {
      const t = setup([record("j1")], 3);
      // maxDeliver 3: the first on its last delivery.
      t.offer("j1", 0, 3);
      t.offer("j1", 1);
      const gone = new AbortController();
      t.failing.fetches.set("j1", () => void gone.abort());
      expect(await t.leases.reserveFromQueue("q", 5, W1, gone.signal)).toEqual([]);
      expect(t.calls).toEqual([
        "fetch j1 3",
        "putBack $JS.ACK.t.j1.3.1.1.0.0",
        "nak(0) $JS.ACK.t.j1.1.2.2.0.0",
      ]);
    });

    it("a lane task whose job's record is not read is put back on its last delivery (the lane's), else nak'd", async () => {
      const t = setup([laneRecord("l1", { createdAt: 1 }), laneRecord("l2", { createdAt: 2 })], 3);
      t.offerLane("l1", laneMaxDeliver);
      t.offerLane("l2");
      t.failing.reads.set("l1", () => new Error("timeout"));
      t.failing.reads.set("l2", () => new Error("timeout"));
      expect(await t.leases.reserveFromQueue("q", 5, W1)).toEqual([]);
      expect(t.calls.filter((c) => !c.startsWith("fetch"))).toEqual([
        "putBack $JS.ACK.t.lane.q.5.1.1.0.0",
        "nak(1000) $JS.ACK.t.lane.q.1.2.2.0.0",
      ]);
    });

    it("what it was leased on its last delivery is put back, not released: a nak would spend it", async () => {
      const once = { ...record("j1").settings, maxDeliver: 1 };
      const t = setup([record("j1", { createdAt: 1, settings: once }), record("j2", { createdAt: 2 })], 3);
      t.offer("j1", 0);
      t.offer("j1", 1);
      t.offer("j2", 0);
      const gone = new AbortController();
      t.failing.reads.set("j2", () => void gone.abort());
      expect(await t.leases.reserveFromQueue("q", 5, W1, gone.signal)).toEqual([]);
      expect(t.calls).toEqual([
        "fetch j1 3",
        "putBack $JS.ACK.t.j1.1.1.1.0.0",
        "putBack $JS.ACK.t.j1.1.2.2.0.0",
      ]);
    });
  });

  it("a delivery answered before a restart is refused after it: the broker's record decides, not memory", async () => {
    const t = setup();
    t.offer("j1", 0);
    const [task] = await t.leases.reserve("j1", 1, W1);
    await t.leases.submitResults("j1", [err(task!.receipt, "busy")], W1);
    t.calls.length = 0;
    const restarted = t.restart();
    await expect(restarted.submitResults("j1", [ok(task!.receipt, "stale")], W1)).resolves.toEqual([
      { id: "j1.0", status: "conflict", answered: "retry" },
    ]);
    await expect(restarted.submitResults("j1", [err(task!.receipt, "busy")], W1)).resolves.toEqual([
      { id: "j1.0", status: "retry", duplicate: true },
    ]);
    await expect(restarted.heartbeat("j1", [task!.receipt], W1)).resolves.toEqual([
      { id: "j1.0", status: "settled" },
    ]);
    expect(t.calls).toEqual([]);
  });

  describe("the lane", () => {
    /** Jobs a and b with consumers of their own, lane jobs L1 and L2 on queue q. */
    const mixed = () =>
      setup([
        record("a", { createdAt: 1 }),
        record("b", { createdAt: 2 }),
        laneRecord("L1", { createdAt: 3 }),
        laneRecord("L2", { createdAt: 4 }),
      ]);

    it("takes its turn in the queue's round robin; each task names its own job and has the lane's lease", async () => {
      const t = mixed();
      for (const i of [0, 1]) {
        t.offer("a", i);
        t.offer("b", i);
      }
      t.offerLane("L1");
      t.offerLane("L2");
      const turns = [];
      for (let n = 0; n < 3; n++) turns.push(await t.leases.reserveFromQueue("q", 1, W1));
      expect(turns.map((tasks) => tasks.map((x) => x.id))).toEqual([["a.0"], ["b.0"], ["L1.0"]]);
      const [laneTask] = turns[2]!;
      expect(laneTask).toMatchObject({
        jobId: "L1",
        index: 0,
        attempt: 1,
        payload: { job: "L1" },
        leaseMs: 28_000,
      });
      // Once the jobs of its turn are drained, a turn goes on to the next source.
      expect((await t.leases.reserveFromQueue("q", 3, W1)).map((x) => x.id)).toEqual(["a.1", "b.1", "L2.0"]);
      // The lane is never asked for one job by id: the jobs' own consumers are.
      expect(t.calls.filter((c) => c.startsWith("fetch L"))).toEqual([]);
    });

    it("is not asked on a queue with no lane job running", async () => {
      const t = setup([record("a"), laneRecord("L1", { status: "succeeded" })]);
      t.offerLane("L1");
      await t.leases.reserveFromQueue("q", 3, W1);
      await t.leases.reserveFromQueue("q", 3, W1);
      expect(t.calls).toEqual(["fetch a 3", "fetch a 3"]);
    });

    it("terms, never hands out, a task whose job is over, rolled back or unknown; a committing lane submit's runs", async () => {
      const t = setup([
        laneRecord("L1"),
        laneRecord("over", { status: "succeeded" }),
        laneRecord("gone-wrong", { status: "failed", phase: SubmitPhase.rolledBack }),
        laneRecord("committing", { status: "queuing", phase: SubmitPhase.submitting }),
      ]);
      for (const id of ["over", "gone-wrong", "unknown", "committing", "L1"]) t.offerLane(id);
      const tasks = await t.leases.reserveFromQueue("q", 5, W1);
      expect(tasks.map((x) => x.id)).toEqual(["committing.0", "L1.0"]);
      expect(t.calls).toEqual([
        "fetch lane q 5",
        "term $JS.ACK.t.lane.q.1.1.1.0.0",
        "term $JS.ACK.t.lane.q.1.2.2.0.0",
        "term $JS.ACK.t.lane.q.1.3.3.0.0",
      ]);
    });

    it("a lane task whose job's record cannot be read goes back after a second; the other jobs' are handed out", async () => {
      const t = setup([laneRecord("L1"), laneRecord("L2"), laneRecord("L3")]);
      for (const id of ["L1", "L2", "L3"]) t.offerLane(id);
      t.failing.reads.set("L2", () => new Error("unsupported job record version 2"));
      // Before: the whole request failed, and the three lane tasks stayed leased, held by nobody.
      const tasks = await t.leases.reserveFromQueue("q", 5, W1).catch((e: unknown) => e);
      expect(tasks).toEqual([
        expect.objectContaining({ id: "L1.0" }),
        expect.objectContaining({ id: "L3.0" }),
      ]);
      // As a native worker does (api/worker-lane.ts laneJobOf): back with a delay, to be read again.
      expect(t.calls).toEqual(["fetch lane q 5", "nak(1000) $JS.ACK.t.lane.q.1.2.2.0.0"]);
    });

    it("a lane job's task is not reserved by its job id: 409 job_in_lane, nothing fetched", async () => {
      const t = mixed();
      t.offerLane("L1");
      await expect(t.leases.reserve("L1", 1, W1)).rejects.toMatchObject({
        status: 409,
        code: "job_in_lane",
        details: { queue: "q" },
        // A lane job may have up to jobs.laneMaxTasks tasks, not one (as the OpenAPI text says).
        message:
          "job L1's tasks are on its queue's lane: reserve them from POST /queues/q/tasks (or submit such jobs with lane: false)",
      });
      expect(t.calls).toEqual([]);
    });

    it("answers and heartbeats of a lane task go to its own job's endpoints, with its receipt", async () => {
      const t = mixed();
      t.offerLane("L1");
      t.offerLane("L2");
      const [one, two] = await t.leases.reserveFromQueue("q", 2, W1);
      t.calls.length = 0;
      await expect(t.leases.submitResults("L2", [ok(one!.receipt, 1)], W1)).rejects.toMatchObject({
        code: "receipt_wrong_job",
      });
      const [beat] = await t.leases.heartbeat("L2", [two!.receipt], W1);
      expect(beat).toMatchObject({ id: "L2.0", status: "extended", leaseMs: 28_000 });
      await expect(t.leases.submitResults("L1", [ok(one!.receipt, 1)], W1)).resolves.toEqual([
        { id: "L1.0", status: "done" },
      ]);
      expect(t.calls).toEqual([
        "working $JS.ACK.t.lane.q.1.2.2.0.0",
        // A 1-task lane job's answer names the submit its receipt was leased under.
        'publish L1 [{"i":0,"ok":true,"r":1,"s":"s1"}] true',
        "ack $JS.ACK.t.lane.q.1.1.1.0.0",
      ]);
    });
  });

  it("a receipt is its token's; a job of a queue out of scope is not found; leases per token are capped", async () => {
    const t = setup([record("j1"), record("j2", { queue: "other" })], 2);
    for (const i of [0, 1, 2]) t.offer("j1", i);
    t.offer("j2", 0);
    const held = await t.leases.reserve("j1", 3, W1);
    expect(held).toHaveLength(2);
    await expect(t.leases.reserve("j1", 1, W1)).rejects.toMatchObject({
      status: 429,
      code: "too_many_leases",
    });
    await expect(t.leases.submitResults("j1", [ok(held[0]!.receipt, 1)], W2)).rejects.toMatchObject({
      status: 403,
      code: "receipt_not_yours",
    });
    await expect(t.leases.reserve("j1", 1, W2)).rejects.toMatchObject({ status: 404 });
    expect(await t.leases.reserve("j2", 1, W2)).toHaveLength(1);
    await t.leases.submitResults("j1", [ok(held[0]!.receipt, 1)], W1);
    expect(await t.leases.reserve("j1", 5, W1)).toHaveLength(1);
  });

  describe("a lease whose job is over gives its permit and its token's slot back", () => {
    it("when its results are answered 410 (job finished) or its heartbeat 404 (record gone)", async () => {
      const { limits, held } = heldPermits();
      const t = setup([record("j1"), record("j2"), record("j3")], 1, limits);
      for (const id of ["j1", "j2", "j3"]) t.offer(id, 0);
      const [first] = await t.leases.reserve("j1", 1, W1);
      expect([...held]).toEqual(["$JS.ACK.t.j1.1.1.1.0.0"]);
      t.byId.set("j1", record("j1", { status: "failed" }));
      await expect(t.leases.submitResults("j1", [ok(first!.receipt, 1)], W1)).rejects.toMatchObject({
        status: 410,
        code: "job_finished",
      });
      expect([...held]).toEqual([]);
      // Its one slot is free: 429 too_many_leases before the fix.
      const [second] = await t.leases.reserve("j2", 1, W1);
      expect(second?.jobId).toBe("j2");
      t.byId.delete("j2");
      await expect(t.leases.heartbeat("j2", [second!.receipt], W1)).rejects.toMatchObject({
        status: 404,
        code: "job_not_found",
      });
      expect([...held]).toEqual([]);
      expect((await t.leases.reserve("j3", 1, W1)).map((x) => x.jobId)).toEqual(["j3"]);
      // Nothing was settled on the broker for the leases of jobs that are over.
      expect(t.calls.filter((c) => !c.startsWith("fetch"))).toEqual([]);
    });

    /** j1 leased (its permit held) and then over, j2 waiting: what a later reserve from the queue finds. */
    const leasedThenOver = async () => {
      const { limits, held } = heldPermits();
      const t = setup([record("j1"), record("j2")], 1, limits);
      t.offer("j1", 0);
      t.offer("j2", 0);
      await t.leases.reserve("j1", 1, W1);
      t.byId.set("j1", record("j1", { status: "failed" }));
      return { t, held };
    };

    it("when the queue's list no longer shows the job running, its record read again says so", async () => {
      const { t, held } = await leasedThenOver();
      expect((await t.leases.reserveFromQueue("q", 1, W1)).map((x) => x.jobId)).toEqual(["j2"]);
      expect([...held]).toEqual(["$JS.ACK.t.j2.1.1.1.0.0"]);
    });

    it("not while its record cannot be read, nor while it runs", async () => {
      const { t, held } = await leasedThenOver();
      t.failing.reads.set(
        "j1",
        () => new OperationTimeout({ message: "timed out", operation: "job.record.get", timeoutMs: 2000 }),
      );
      await expect(t.leases.reserveFromQueue("q", 1, W1)).rejects.toMatchObject({ status: 429 });
      t.failing.reads.clear();
      t.byId.set("j1", record("j1"));
      await expect(t.leases.reserveFromQueue("q", 1, W1)).rejects.toMatchObject({ status: 429 });
      expect([...held]).toEqual(["$JS.ACK.t.j1.1.1.1.0.0"]);
    });
  });
});
