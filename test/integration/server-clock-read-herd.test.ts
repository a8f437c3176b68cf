/**
 * The cost of `leases.readServerTime()` (e669ee6) under concurrent waits:
 * a submitter that never listed the leases (no reaper, no takeover) whose
 * 40 submits each wait on a live submit of their key from another runtime.
 * Its doc promises one reading "read now, kept as serverTime() then": the
 * runtime needs one. Each waiting submit that finds no reading reads its
 * own, with nothing shared while one is in flight, so 40 submits at once
 * make and delete 40 consumers on the leases' stream (two JetStream API
 * round trips each, a consumer create a meta-layer proposal on a cluster):
 * a retry storm of duplicate submits becomes a storm of consumer creates.
 * Oracle: the consumer creates the server was asked for, heard by a client
 * of the test's own on the JetStream API subjects.
 * Fails on the current code: ~40 creates of `clock_…` consumers, not 1.
 */
import { expect, it } from "vitest";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { natsClockBackend, offsetBy } from "../harness/clock-backends.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

const served = useServerConnection();
const keys = 40;

it("concurrent submits waiting on live submits of their keys read the server's clock once", async () => {
  const backend = natsClockBackend(served.server, served.nc);
  const clockCreates: string[] = [];
  const heard = served.nc.subscribe("$JS.API.CONSUMER.CREATE.*.*", {
    callback: (_e, m) => {
      if (m.subject.split(".").at(-1)?.startsWith("clock_")) clockCreates.push(m.subject);
    },
  });
  await served.nc.flush();
  const release = gate();
  try {
    let createdCount = 0;
    let allCreated = () => {};
    const recordsCreated = new Promise<void>((resolve) => {
      allCreated = resolve;
    });
    // Each of its submits held between its record's create and its publish: live, in flight.
    const first = await backend.submitter("first", {
      clock: offsetBy(0),
      hooks: {
        afterStep: async (at) => {
          if (at !== SubmitStep.recordCreated) return;
          if (++createdCount === keys) allCreated();
          await release.opened;
        },
      },
    });
    // A submit finding its key's submit in flight reads the job's record, asks the server's
    // clock, pauses and reads it again: a third read of a record is past its first ask (the
    // records it reads once are not its key's job's).
    const reads = new Map<unknown, number>();
    const second = await backend.submitter("second", {
      clock: offsetBy(0),
      hooks: {},
      wrap: (broker) =>
        spiedBroker(broker, (name, _n, args, call) => {
          if (name === "getRecord") reads.set(args[0], (reads.get(args[0]) ?? 0) + 1);
          return call();
        }).broker,
    });
    const request = (k: number) => ({ queue: "q", tasks: [k], idempotencyKey: `k${k}`, lane: false });
    const firsts = Array.from({ length: keys }, (_, k) => first.registry.submit(request(k)));
    await recordsCreated;
    const seconds = Array.from({ length: keys }, (_, k) => second.registry.submit(request(k)));
    // The firsts stay in flight until every second submit waited on its key's and asked the clock.
    await waitUntil(() => [...reads.values()].filter((n) => n >= 3).length === keys, {
      timeoutMs: 20_000,
      message: () =>
        `every second submit waiting on its key's (reads ${JSON.stringify([...reads.values()])})`,
    });
    release.open();
    const [a, b] = await Promise.all([Promise.all(firsts), Promise.all(seconds)]);
    expect(b.map((j) => j.id)).toEqual(a.map((j) => j.id));
    await served.nc.flush();
    // One reading serves the runtime for five minutes; a second at most if two raced the first.
    expect(clockCreates.length).toBeGreaterThan(0);
    expect(clockCreates.length).toBeLessThanOrEqual(2);
  } finally {
    release.open();
    heard.unsubscribe();
    await backend.stop();
  }
}, 60_000);
