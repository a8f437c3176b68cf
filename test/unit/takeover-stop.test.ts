/**
 * `rt.stop()` against a call that starts a job actor and is still in
 * flight: a takeover pass that asked for an orphaned job's lease, or a
 * `rt.jobs.get` reading the job's record, before the stop, answered only
 * once the stop has stopped the job actors and is ending the loops. Neither
 * may start an actor then (nothing would stop it): after `rt.stop()` no job
 * actor runs, none of its timers is pending, and the job's lease is free
 * for another runtime to take it over at once.
 */
import { expect, it } from "vitest";
import type { AnyActorRef, InspectionEvent } from "xstate";
import type { Broker } from "../../src/adapters/broker.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  type MemoryServer,
} from "../../src/adapters/memory/memory-broker.ts";
import type { SupervisionLeases } from "../../src/adapters/supervision-leases.ts";
import type { Role } from "../../src/api/permissions.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

/** Pending timers (Node's `Timeout` resources) right now. */
const pendingTimers = () => process.getActiveResourcesInfo().filter((name) => name === "Timeout").length;

const signalled = () => {
  let fire: () => void = () => undefined;
  const fired = new Promise<void>((resolve) => {
    fire = resolve;
  });
  return { fire, fired };
};

/**
 * A memory broker on `server` whose first call of `gated` waits for
 * `grant()` (`asked` resolves when it is made); `stopping` resolves once the
 * runtime's record watch is told to end, which `rt.stop()` does after it
 * stopped the job actors.
 */
const gatedBroker = (server: MemoryServer, gated: "leases.acquire" | "getRecord") => {
  const inner = createMemoryBroker({ server });
  const granted = signalled();
  const asked = signalled();
  const stopping = signalled();
  let calls = 0;
  const wrap = <T extends object>(target: T, prefix: string): T =>
    new Proxy(target, {
      get(obj, key, receiver) {
        if (key === "leases") return leases;
        const value = Reflect.get(obj, key, receiver);
        if (typeof value !== "function") return value;
        return async (...args: unknown[]) => {
          if (key === "watchRecordChanges")
            (args[1] as AbortSignal).addEventListener("abort", () => stopping.fire(), { once: true });
          if (`${prefix}${String(key)}` === gated && ++calls === 1) {
            asked.fire();
            await granted.fired;
          }
          return value.apply(obj, args);
        };
      },
    });
  const leases: SupervisionLeases = wrap(inner.leases, "leases.");
  const broker: Broker = wrap(inner, "");
  return { broker, grant: granted.fire, asked: asked.fired, stopping: stopping.fired };
};

/** An orphan: a running job (no worker) whose supervisor stopped and gave its lease back. */
const orphanOn = async (server: MemoryServer) => {
  const seeder = await createRuntime({ broker: createMemoryBroker({ server }), logger: silentLogger() });
  const job = await seeder.jobs.submit({ queue: "q", tasks: [1, 2] });
  await seeder.stop();
  return job.id;
};

/** The job's lease as stored: held by someone (until in the future) or free. */
const heldLease = async (server: MemoryServer, jobId: string) => {
  const leases = await createMemoryBroker({ server }).leases.list();
  return leases.find((l) => l.jobId === jobId && l.lease.until > Date.now());
};

it.each<[string, "leases.acquire" | "getRecord", Role]>([
  ["a takeover pass that wins a lease", "leases.acquire", "supervisor"],
  ["a rt.jobs.get that reads the record", "getRecord", "submitter"],
])("%s while rt.stop() runs leaves no job actor, timer or lease behind", async (_, gated, role) => {
  const server = createMemoryServer();
  const jobId = await orphanOn(server);
  expect(await heldLease(server, jobId)).toBeUndefined();
  const timersBefore = pendingTimers();
  const actors = new Map<string, AnyActorRef>();
  const inspect = (event: InspectionEvent) => {
    const actor = event.actorRef as AnyActorRef;
    if (event.type === "@xstate.actor" && actor.id.startsWith("job:")) actors.set(actor.sessionId, actor);
  };
  const { broker, grant, asked, stopping } = gatedBroker(server, gated);
  const rt = await createRuntime({
    broker,
    logger: silentLogger(),
    inspect: { inspect },
    roles: [role],
    jobs: { leaseMs: 100 },
  });
  try {
    // The get's answer: refused as the runtime stopped, not a handle on an actor nobody stops.
    const got =
      role === "submitter"
        ? rt.jobs.get(jobId).then(
            () => "a handle",
            (e) => e._tag,
          )
        : undefined;
    await asked;
    const stopped = rt.stop();
    await stopping; // the job actors are stopped; the loops are ending
    grant();
    await stopped;
    const running = [...actors.values()].filter((a) => a.getSnapshot().status !== "stopped");
    expect(running.map((a) => a.id)).toEqual([]);
    expect(pendingTimers()).toBeLessThanOrEqual(timersBefore);
    // Given back (written as run out), for another runtime to take the job over at once.
    expect(await heldLease(server, jobId)).toBeUndefined();
    if (got) expect(await got).toBe("RuntimeStopped");
  } finally {
    for (const actor of actors.values()) actor.stop();
    server.close();
  }
});
