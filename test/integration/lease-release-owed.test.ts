/**
 * A lease release that gets no answer (JetStream away) is owed: the
 * runtime's next heartbeat, once JetStream answers again, removes the lease.
 * Without it, the heartbeat would keep renewing a lease whose job is over
 * for as long as the runtime holds any other. The oracle is the bucket as
 * stored, read through a connection of this test's own.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it, onTestFinished } from "vitest";
import { partsOf, type Runtime } from "../../src/api/runtime.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const leaseMs = 1500;

describe("a lease release JetStream did not answer", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  // No takeover pass: it too removes a lease whose job has no record, and would hide the heartbeat's.
  useNatsRuntime(
    { name: "owner", logger, jobs: { leaseMs, takeOver: false, cleanupIntervalMs: 0 } },
    (started) => {
      ({ server, rt } = started);
    },
  );

  it("is written by the next heartbeat once it answers; the running job's lease stays", async () => {
    const { leases } = partsOf(rt).broker;
    // A job that stays running (no worker) keeps the runtime's heartbeat going, which runs from
    // its first job on and only while a lease is held.
    const kept = (await rt.jobs.submit({ queue: "held", tasks: [1] })).id;
    // A job id of this test's own (no record: no actor acts on it).
    const ended = "jowedended";
    expect(await leases.acquire(ended, leaseMs)).toBe(true);
    expect(leases.holds(kept)).toBe(true);

    // Connected, but JetStream does not answer: the release's request times out.
    await server.restart({ jetstream: false });
    await leases.release(ended);
    expect(leases.holds(ended)).toBe(false);
    await server.restart();

    const nc = await connect({ servers: server.url, name: "lease-owed-test" });
    onTestFinished(() => nc.close());
    const bucket = await new Kvm(nc).open("jetstate_leases");
    const stored = async (key: string) => (await bucket.get(key))?.operation === "PUT";
    expect(await stored(ended)).toBe(true);
    await waitUntil(async () => !(await stored(ended)), {
      timeoutMs: 15_000,
      message: "the owed release written by a heartbeat",
    });
    // Gone from the stream, not marked deleted: nothing left for a lease listing to read.
    const jsm = await jetstreamManager(nc);
    const last = await jsm.streams
      .getMessage("KV_jetstate_leases", { last_by_subj: `$KV.jetstate_leases.${ended}` })
      .catch(() => null);
    expect(last).toBeNull();
    expect(await stored(kept)).toBe(true);
  }, 60_000);
});
