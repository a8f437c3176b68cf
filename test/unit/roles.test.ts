/**
 * Roles: which calls a runtime takes and which background loops it runs. The
 * loops are observed at the broker port (a spy counts the calls that reach
 * it), not through the runtime's own account of itself.
 */
import { describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { natsPermissions, type Role } from "../../src/api/permissions.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { InvalidArgument, RoleNotHeld } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, waitUntil } from "../harness/wait.ts";

/** The memory broker behind a proxy that counts each method called on it. */
const spiedMemoryBroker = () => {
  const { broker, calls } = spiedBroker(createMemoryBroker({ prefix: "jetstate" }));
  return { broker, calls: (name: string) => calls.get(name) ?? 0 };
};

const runtimeWith = async (
  roles: Role[] | undefined,
  jobs = { reapIntervalMs: 20, cleanupIntervalMs: 20 },
) => {
  const spy = spiedMemoryBroker();
  const rt = await createRuntime({
    broker: spy.broker,
    logger: silentLogger(),
    ...(roles ? { roles } : {}),
    jobs: { ...jobs, leaseMs: 100 },
  });
  return { rt, ...spy };
};

/**
 * The barrier of a test that checks a loop does not run: a runtime with every role, made
 * after the one under test with the same intervals, whose reaper and cleanup have each run
 * twice. The runtime under test, older, has had every chance to run the loops too.
 */
const twoPassesOfAnother = async () => {
  const control = await runtimeWith(undefined);
  try {
    await waitUntil(() => control.calls("leases.list") >= 2 && control.calls("cleanup") >= 2, {
      timeoutMs: 5000,
      message: "a runtime with every role reaped and cleaned up twice",
    });
  } finally {
    await control.rt.stop();
  }
};

describe("roles", () => {
  it("a worker-only runtime runs no reaper, cleanup, takeover, dead-letter or record-watch loop", async () => {
    const { rt, calls } = await runtimeWith(["worker"]);
    await twoPassesOfAnother();
    await rt.stop();
    // The reaper and the takeover scan list the leases; cleanup and dead letters have their own calls.
    expect(calls("leases.list")).toBe(0);
    expect(calls("listRecords")).toBe(0);
    expect(calls("cleanup")).toBe(0);
    expect(calls("processExhausted")).toBe(0);
    expect(calls("watchRecordChanges")).toBe(0);
  });

  it.each<{ roles: Role[] | undefined }>([{ roles: ["worker"] }, { roles: undefined }])(
    "a runtime with roles $roles and two workers runs one record watch, shared",
    async ({ roles }) => {
      const { rt, calls } = await runtimeWith(roles);
      rt.workers.start({ queue: "a", handler: () => 1 });
      rt.workers.start({ queue: "b", handler: () => 1 });
      await waitUntil(() => calls("watchRecordChanges") >= 1, { timeoutMs: 5000, message: "a record watch" });
      await twoPassesOfAnother();
      await rt.stop();
      expect(calls("watchRecordChanges")).toBe(1);
    },
  );

  it("a runtime with every role (the default) runs each of them", async () => {
    const { rt, calls } = await runtimeWith(undefined);
    await waitUntil(() => calls("leases.list") > 1 && calls("cleanup") > 1, {
      timeoutMs: 5000,
      message: "reaped and cleaned up twice",
    });
    await rt.stop();
    expect(calls("leases.list")).toBeGreaterThan(1);
    expect(calls("cleanup")).toBeGreaterThan(1);
    expect(calls("processExhausted")).toBe(1);
    // The runtime's record watch (changes from its start).
    expect(calls("watchRecordChanges")).toBe(1);
  });

  it("admin alone reaps and cleans up; supervisor alone takes over and dead-letters", async () => {
    const admin = await runtimeWith(["admin"]);
    const supervisor = await runtimeWith(["supervisor"]);
    // Each has run its loops twice (the admin's cleanup, the supervisor's takeover scan): the
    // other's loops, if it ran them, had the same time.
    await waitUntil(() => admin.calls("cleanup") > 1 && supervisor.calls("leases.list") > 1, {
      timeoutMs: 5000,
      message: "the admin cleaned up twice, the supervisor scanned twice",
    });
    await waitUntil(() => supervisor.calls("processExhausted") >= 1, {
      timeoutMs: 5000,
      message: "the supervisor's dead-letter loop",
    });
    await Promise.all([admin.rt.stop(), supervisor.rt.stop()]);
    expect(admin.calls("cleanup")).toBeGreaterThan(1);
    expect(admin.calls("processExhausted")).toBe(0);
    expect(supervisor.calls("cleanup")).toBe(0);
    expect(supervisor.calls("processExhausted")).toBe(1);
    expect(supervisor.calls("leases.list")).toBeGreaterThan(1);
  });

  it("an admin with reapIntervalMs and cleanupIntervalMs 0 (the CLI's) reaps and cleans up nothing by itself", async () => {
    const admin = await runtimeWith(["admin"], { reapIntervalMs: 0, cleanupIntervalMs: 0 });
    await twoPassesOfAnother();
    await admin.rt.stop();
    // The reaper's pass lists the leases; it would have run at once and every 20 ms.
    expect(admin.calls("leases.list")).toBe(0);
    expect(admin.calls("cleanup")).toBe(0);
  });

  it("a submitter without the supervisor role that watches a job never takes it over; a supervisor does", async () => {
    const server = createMemoryServer();
    const jobs = { leaseMs: 100, reapIntervalMs: 0, cleanupIntervalMs: 0 };
    const a = await createRuntime({
      broker: createMemoryBroker({ server, holder: "a" }),
      logger: silentLogger(),
      jobs,
    });
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    a.workers.start<number, number>({
      queue: "q",
      // Its handlers wait on the gate: a's stop releases their tasks at once, not after 30 s.
      stopTimeoutMs: 100,
      handler: async (task) => {
        await gate;
        return task.payload;
      },
    });
    const job = await a.jobs.submit<number, number>({ queue: "q", tasks: [1, 2] });
    const watcherBroker = createMemoryBroker({ server, holder: "watcher" });
    const watcher = await createRuntime({
      broker: watcherBroker,
      logger: silentLogger(),
      roles: ["submitter"],
      jobs,
    });
    const watched = await watcher.jobs.get<number>(job.id);
    // Its supervisor stops (its lease is given back, run out): the job is an orphan.
    await a.stop();
    // A window in which a takeover could happen (the lease, 100 ms, runs out in it): no state
    // says "the watcher chose not to take over".
    await delay(600);
    // The ledger: the leases as the store holds them.
    const holders = (await watcherBroker.leases.list()).map((l) => l.lease.holder);
    expect(holders).not.toContain("watcher");
    // A supervisor takes it over; the watcher still sees it end.
    const d = await createRuntime({
      broker: createMemoryBroker({ server, holder: "d" }),
      logger: silentLogger(),
      jobs,
    });
    d.workers.start<number, number>({ queue: "q", handler: (task) => task.payload });
    open();
    expect(await watched!.done()).toMatchObject({ status: "succeeded", done: 2 });
    await Promise.all([watcher.stop(), d.stop()]);
  });

  it("a call that needs a role the runtime lacks throws RoleNotHeld, naming the role", async () => {
    const { rt } = await runtimeWith(["worker"]);
    await expect(rt.jobs.submit({ queue: "q", tasks: [1] })).rejects.toMatchObject({
      _tag: "RoleNotHeld",
      role: "submitter",
    });
    await expect(rt.jobs.get("x")).rejects.toBeInstanceOf(RoleNotHeld);
    await expect(rt.admin.cleanup()).rejects.toMatchObject({ role: "admin" });
    await expect(rt.admin.provision(["q"])).rejects.toMatchObject({ role: "admin" });
    await rt.stop();
    const submitter = await runtimeWith(["submitter"]);
    expect(() => submitter.rt.workers.start({ queue: "q", handler: () => 1 })).toThrow(
      /needs the worker role/,
    );
    await submitter.rt.stop();
  });

  it("a submitter and a worker in two runtimes run a job", async () => {
    const broker = createMemoryBroker({ prefix: "jetstate" });
    const opts = { broker, logger: silentLogger() };
    const submitter = await createRuntime({ ...opts, roles: ["submitter", "supervisor"] });
    const worker = await createRuntime({ ...opts, roles: "worker" });
    const w = worker.workers.start<number, number>({ queue: "q", handler: (t) => t.payload + 1 });
    const job = await submitter.jobs.submit({ queue: "q", tasks: [1, 2, 3] });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 3 });
    await w.stop();
    await Promise.all([worker.stop(), submitter.stop()]);
  });

  it.each([
    [[], /non-empty/],
    ["boss", /unknown role "boss"/],
    [["worker", 3], /unknown role 3/],
    [{}, /must be a role/],
  ])("roles %j is refused before anything connects", async (roles, message) => {
    await expect(createRuntime({ broker: "memory", roles: roles as Role[] })).rejects.toSatisfy(
      (error) => error instanceof InvalidArgument && error.field === "roles" && message.test(error.message),
    );
  });
});

describe("natsPermissions", () => {
  const allowed = (subjects: readonly string[], subject: string) =>
    subjects.some((pattern) => matches(pattern, subject));

  it("a worker of A may pull, ack, answer and put back A's tasks, and nothing of B's", () => {
    const { publish } = natsPermissions({ role: "worker", queues: ["A"], prefix: "p" });
    expect(allowed(publish.allow, "$JS.API.CONSUMER.MSG.NEXT.p_tasks_A.job1")).toBe(true);
    expect(allowed(publish.allow, "$JS.ACK.p_tasks_A.job1.1.2.3.4.5")).toBe(true);
    expect(allowed(publish.allow, "p.results.A.job1")).toBe(true);
    // Its queue's lane, if it finds it missing (and no other consumer).
    expect(allowed(publish.allow, "$JS.API.CONSUMER.CREATE.p_tasks_A.lane.p.tasks.A.lane.>")).toBe(true);
    expect(allowed(publish.allow, "$JS.API.CONSUMER.DURABLE.CREATE.p_tasks_A.lane")).toBe(true);
    // Its queue's two permit pools' consumers, if it finds them missing (and no other queue's).
    expect(
      allowed(publish.allow, "$JS.API.CONSUMER.CREATE.p_permits.concurrency_A.p.permits.A.concurrency"),
    ).toBe(true);
    expect(allowed(publish.allow, "$JS.API.CONSUMER.DURABLE.CREATE.p_permits.rate_A")).toBe(true);
    // A task of A it puts back as it stops (a copy on its job's subject or the lane's).
    expect(allowed(publish.allow, "p.tasks.A.job1")).toBe(true);
    expect(allowed(publish.allow, "p.tasks.A.lane.job1")).toBe(true);
    for (const subject of [
      "$JS.API.CONSUMER.MSG.NEXT.p_tasks_B.job2",
      "$JS.ACK.p_tasks_B.job2.1.2.3.4.5",
      "p.results.B.job2",
      "p.progress.B.job2",
      "p.dead.B.job2",
      "p.tasks.B.job2",
      "p.tasks.B.lane.job2",
      "$JS.API.STREAM.CREATE.p_tasks_A",
      "$JS.API.CONSUMER.DELETE.p_tasks_A.job1",
      "$JS.API.CONSUMER.CREATE.p_tasks_A.job1.p.tasks.A.job1",
      "$JS.API.CONSUMER.DURABLE.CREATE.p_tasks_A.job1",
      "$JS.API.CONSUMER.CREATE.p_tasks_B.lane.p.tasks.B.lane.>",
      "$JS.API.CONSUMER.DURABLE.CREATE.p_tasks_B.lane",
      "$JS.API.CONSUMER.CREATE.p_permits.concurrency_B.p.permits.B.concurrency",
      "$JS.API.CONSUMER.DURABLE.CREATE.p_permits.rate_B",
      "$JS.API.CONSUMER.CREATE.p_permits.other",
      "$KV.p_jobs.job1",
    ])
      expect(allowed(publish.allow, subject), subject).toBe(false);
  });

  it("a submitter of A may publish A's tasks and commit A's jobs, not B's", () => {
    const { publish } = natsPermissions({ role: "submitter", queues: ["A"] });
    expect(allowed(publish.allow, "jetstate.tasks.A.job1")).toBe(true);
    expect(
      allowed(publish.allow, "$JS.API.CONSUMER.CREATE.jetstate_tasks_A.job1.jetstate.tasks.A.job1"),
    ).toBe(true);
    expect(allowed(publish.allow, "jetstate.tasks.B.job1")).toBe(false);
    expect(
      allowed(publish.allow, "$JS.API.CONSUMER.CREATE.jetstate_tasks_B.job1.jetstate.tasks.B.job1"),
    ).toBe(false);
    expect(allowed(publish.allow, "$JS.API.CONSUMER.MSG.NEXT.jetstate_tasks_A.job1")).toBe(true);
  });

  it("roles combine; bad requests are refused with the field named", () => {
    const both = natsPermissions({ role: ["worker", "submitter"], queues: ["A"] });
    const worker = natsPermissions({ role: "worker", queues: ["A"] });
    for (const subject of worker.publish.allow) expect(both.publish.allow).toContain(subject);
    expect(() => natsPermissions({ role: "worker", queues: [] })).toThrow(/queues/);
    expect(() => natsPermissions({ role: "worker", queues: ["a.b"] })).toThrow(/queues\[0\]/);
    expect(() => natsPermissions({ role: "janitor" as Role, queues: "*" })).toThrow(/unknown role/);
  });
});

/** NATS subject matching: `*` one token, `>` one or more trailing tokens. */
const matches = (pattern: string, subject: string): boolean => {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
};
