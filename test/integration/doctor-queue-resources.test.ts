/**
 * `rt.admin.diagnose()` (the CLI's `doctor`) and the server resources a queue
 * relies on beyond its tasks and advisories streams: the answers bucket, the
 * permits stream with each limited queue's pools and their consumers, the
 * per-target permits stream, each queue's delayed stream and its `due`
 * consumer. A new user's trial found none of them checked: each test breaks
 * one by hand, with a raw client, as an operator or a lost store would, and
 * diagnose must name it in a problem. A healthy setup using all of them
 * reports none. Each test has its own prefix, so its breakage is its own.
 */

import path from "node:path";
import { type JetStreamManager, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type AuthFiles, authFiles, roleUsersConfig } from "../harness/nats-auth.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { gate, within } from "../harness/wait.ts";

let server: NatsServerHandle;
let nc: NatsConnection;
let jsm: JetStreamManager;
const runtimes: Runtime[] = [];

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
});
afterEach(async () => {
  for (const rt of runtimes.splice(0)) await rt.stop();
});
afterAll(async () => {
  await nc?.close();
  await server?.dispose();
});

const runtime = async (prefix: string, roles?: "admin"): Promise<Runtime> => {
  const rt = await createRuntime({
    servers: server.url,
    prefix,
    logger: silentLogger(),
    ...(roles === undefined ? {} : { roles }),
  });
  runtimes.push(rt);
  return rt;
};

/** A queue with jobs done, one job held for an hour, and limits set: every resource in use. */
const inUse = async (prefix: string, queue = "q"): Promise<Runtime> => {
  const rt = await runtime(prefix);
  await rt.queues.configure(queue, {
    maxConcurrency: 3,
    ratePerSecond: 50,
    perTarget: { maxConcurrency: 2 },
  });
  const worker = rt.workers.start<number, number>({ queue, handler: (t) => t.payload });
  try {
    const job = await rt.jobs.submit<number, number>({ queue, tasks: [1, 2] });
    expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded" });
    await rt.jobs.submit<number, number>({ queue, tasks: [3], delayMs: 3_600_000 });
  } finally {
    await worker.stop();
  }
  return rt;
};

/** Diagnose's problems name every one of `words` in one of them. */
const expectProblemNaming = async (rt: Runtime, ...words: string[]): Promise<void> => {
  const problems = (await rt.admin.diagnose()).problems.map((p) => p.what);
  expect(
    problems.some((p) => words.every((w) => p.includes(w))),
    `${words.join(" ")} in:\n${problems.join("\n")}`,
  ).toBe(true);
};

it("a healthy setup with jobs, held tasks and a limited queue: no problem, every resource checked", async () => {
  const rt = await inUse("well");
  const d = await rt.admin.diagnose();
  expect(d.problems).toEqual([]);
  const stores = new Map(d.stores.map((s) => [s.name, s]));
  for (const name of ["well_permits", "well_delayed_q", "well_tpermits_q"])
    expect(stores.get(name), name).toMatchObject({ present: true, replicas: 1 });
  expect(stores.get("well_delayed_q")).toMatchObject({ queue: "q", messages: 1 });
  // The HTTP API's bucket, made by its first answer: not in use here, and no problem.
  expect(stores.get("KV_well_answers")).toMatchObject({ present: false, firstUse: expect.any(String) });
});

it("permits held by running handlers still count in their pool: no problem while a limited queue works", async () => {
  const rt = await runtime("busy");
  await rt.queues.configure("q", { maxConcurrency: 2, ratePerSecond: 50 });
  const started = gate();
  const release = gate();
  let running = 0;
  const worker = rt.workers.start<number, number>({
    queue: "q",
    concurrency: 2,
    handler: async (t) => {
      if (++running === 2) started.open();
      await release.opened;
      return t.payload;
    },
  });
  try {
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [1, 2, 3] });
    expect(await within(started.opened, 10_000)).not.toBe("never");
    expect((await rt.admin.diagnose()).problems).toEqual([]);
    release.open();
    expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded" });
  } finally {
    release.open();
    await worker.stop();
  }
});

it("a fresh runtime that ran a job with no delay and no limit: the delayed and permits streams are not in use yet", async () => {
  const rt = await runtime("fresh");
  const worker = rt.workers.start<number, number>({ queue: "q", handler: (t) => t.payload });
  try {
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [1] });
    expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded" });
  } finally {
    await worker.stop();
  }
  const d = await rt.admin.diagnose();
  expect(d.problems).toEqual([]);
  for (const name of ["fresh_permits", "fresh_delayed_q"])
    expect(
      d.stores.find((s) => s.name === name),
      name,
    ).toMatchObject({ present: false, firstUse: expect.any(String) });
});

it("the answers bucket keeping answers less than the 24 h the HTTP API relies on: a problem naming it", async () => {
  const rt = await runtime("ans");
  await rt.admin.provision();
  // Provision made the bucket as the HTTP API wants it (read raw): 24 h, no problem.
  const { config } = await jsm.streams.info("KV_ans_answers");
  expect(config.max_age).toBe(24 * 3_600_000 * 1e6);
  expect((await rt.admin.diagnose()).problems).toEqual([]);
  await jsm.streams.update("KV_ans_answers", {
    ...config,
    max_age: 60_000 * 1e6,
    duplicate_window: 60_000 * 1e6,
  });
  await expectProblemNaming(rt, "KV_ans_answers");
  // The fix it gives (nats stream edit --max-age 24h), as the API does it.
  await jsm.streams.update("KV_ans_answers", { ...config, max_age: 24 * 3_600_000 * 1e6 });
  expect((await rt.admin.diagnose()).problems).toEqual([]);
});

/** Each breaks one resource of a queue in use (`inUse`) under its own prefix; the problem names these. */
const breakages = [
  {
    title: "the permits stream missing while a queue has limits",
    prefix: "perm",
    breakIt: () => jsm.streams.delete("perm_permits"),
    naming: ["perm_permits"],
    repair: (rt: Runtime) => rt.queues.configure("q", { maxConcurrency: 3, ratePerSecond: 50 }),
  },
  {
    title: "a pool's consumer missing",
    prefix: "pcon",
    breakIt: () => jsm.consumers.delete("pcon_permits", "concurrency_q"),
    naming: ["concurrency_q"],
    repair: (rt: Runtime) => rt.queues.configure("q", { maxConcurrency: 3, ratePerSecond: 50 }),
  },
  {
    title: "a pool's consumer that uses permits up (a max deliver)",
    prefix: "pmax",
    breakIt: () => jsm.consumers.update("pmax_permits", "rate_q", { max_deliver: 5 }),
    naming: ["rate_q"],
    repair: async (rt: Runtime) => {
      await jsm.consumers.delete("pmax_permits", "rate_q");
      await rt.queues.configure("q", { maxConcurrency: 3, ratePerSecond: 50 });
    },
  },
  {
    title: "a pool with fewer permits than its limit (lost from the stream)",
    prefix: "pool",
    breakIt: () => jsm.streams.purge("pool_permits", { filter: "pool.permits.q.concurrency" }),
    naming: ["pool.permits.q.concurrency", "holds 0 permit", "is 3"],
    repair: (rt: Runtime) => rt.queues.configure("q", { maxConcurrency: 3, ratePerSecond: 50 }),
  },
  {
    title: "the per-target permits stream missing while the queue has per-target limits",
    prefix: "tper",
    breakIt: () => jsm.streams.delete("tper_tpermits_q"),
    naming: ["tper_tpermits_q"],
    repair: async (rt: Runtime) => {
      await rt.queues.configure("q", { perTarget: null });
      await rt.queues.configure("q", { perTarget: { maxConcurrency: 2 } });
    },
  },
];

it.each(breakages)(
  "$title: a problem naming it, and its fix clears it",
  async ({ prefix, breakIt, naming, repair }) => {
    const rt = await inUse(prefix);
    await breakIt();
    await expectProblemNaming(rt, ...naming);
    // The fix as a CLI would run it: a fresh admin runtime, nothing looked up before.
    const admin = await runtime(prefix, "admin");
    await repair(admin);
    expect((await admin.admin.diagnose()).problems).toEqual([]);
  },
);

it("a delayed stream's due consumer missing: a problem naming it", async () => {
  const rt = await inUse("due");
  // The job holding tasks is this runtime's: its mover would set the consumer up again. The
  // doctor is an admin only: it takes over no job, so it moves no held task.
  await rt.stop();
  runtimes.splice(0);
  await jsm.consumers.delete("due_delayed_q", "due");
  const admin = await runtime("due", "admin");
  await expectProblemNaming(admin, "consumer due", "due_delayed_q");
  await admin.admin.provision(["q"]);
  expect((await admin.admin.diagnose()).problems).toEqual([]);
});

it("a queue's dead-letters consumer missing (its exhausted tasks never become dead letters): a problem naming it", async () => {
  await (await runtime("dlc", "admin")).admin.provision(["q"]);
  await jsm.consumers.delete("dlc_advisories_q", "dead-letters");
  const admin = await runtime("dlc", "admin");
  await expectProblemNaming(admin, "consumer dead-letters", "dlc_advisories_q");
  // The fix it gives, from a runtime that set nothing up before (as the CLI).
  await (await runtime("dlc", "admin")).admin.provision(["q"]);
  expect((await admin.admin.diagnose()).problems).toEqual([]);
});

it("a queue's lane consumer missing while lane tasks wait on its tasks stream: a problem naming it", async () => {
  const rt = await runtime("lan");
  await rt.admin.provision();
  await rt.jobs.submit({ queue: "q", tasks: [1], lane: true });
  // The submitter supervises the job and would make its lane again: the doctor is another runtime.
  await rt.stop();
  runtimes.splice(0);
  await jsm.consumers.delete("lan_tasks_q", "lane");
  const admin = await runtime("lan", "admin");
  await expectProblemNaming(admin, "consumer lane", "lan_tasks_q");
  // The fix it gives: a lane job submitted by a runtime that may make consumers.
  await (await runtime("lan")).jobs.submit({ queue: "q", tasks: [2], lane: true });
  expect((await admin.admin.diagnose()).problems).toEqual([]);
});

it("a delayed stream with limits retention (moved tasks stay, counted as held): a problem naming it", async () => {
  const rt = await runtime("dret");
  await jsm.streams.add({
    name: "dret_delayed_q",
    subjects: ["dret.delayed.q.*"],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
  });
  await rt.admin.provision(["q"]);
  await expectProblemNaming(rt, "dret_delayed_q", "retention");
  await jsm.streams.delete("dret_delayed_q");
  const admin = await runtime("dret", "admin");
  await admin.admin.provision(["q"]);
  expect((await admin.admin.diagnose()).problems).toEqual([]);
});

describe("an admin of some queues only, on a server with others", () => {
  let files: AuthFiles;
  let authed: NatsServerHandle;
  const password = "doctor-s3cret";

  beforeAll(async () => {
    files = await authFiles();
    const users = {
      adminA: { role: "admin", queues: ["A"] },
      adminAB: { role: "admin", queues: ["A", "B"] },
    } as const;
    const conf = roleUsersConfig(path.join(files.dir, "server.log"), password, users);
    authed = await startNatsServer({ args: ["-c", await files.file("users.conf", conf)] });
    const all = await createRuntime({
      servers: authed.url,
      auth: { user: "adminAB", pass: password },
      roles: "admin",
      logger: silentLogger(),
    });
    try {
      await all.admin.provision(["A", "B"]);
      await all.queues.configure("B", { maxConcurrency: 2 });
    } finally {
      await all.stop();
    }
  }, 60_000);
  afterAll(async () => {
    await authed?.dispose();
    await files?.remove();
  });

  it("another queue's resources it may not read are not checked, and not called missing", async () => {
    const rt = await createRuntime({
      servers: authed.url,
      auth: { user: "adminA", pass: password },
      roles: "admin",
      logger: silentLogger(),
    });
    runtimes.push(rt);
    const d = await rt.admin.diagnose();
    expect(d.stores.find((s) => s.name === "jetstate_delayed_A")).toMatchObject({ present: true });
    expect(
      d.problems.filter((p) => p.what.includes("_B")),
      JSON.stringify(d.problems),
    ).toEqual([]);
  });
});
