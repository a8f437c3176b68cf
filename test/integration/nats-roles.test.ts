/**
 * Least privilege, end to end: a nats-server whose users have exactly the
 * permissions `natsPermissions()` gives their roles. An admin provisions, a
 * submitter submits, a supervisor turns an unanswered task into a dead
 * letter, and one worker per queue answers. The oracles are independent of
 * jetstate: the server's own log of permission violations (none but the ones
 * provoked here), the handlers' ledgers (which worker saw which task), and
 * the tasks stream read raw as an admin.
 */
import path from "node:path";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { RoleNotHeld } from "../../src/kernel/errors.ts";
import { type AuthFiles, authFiles, loggedViolations, roleUsersConfig } from "../harness/nats-auth.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { storedCount } from "../harness/raw-results.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const prefix = "perm";
const password = "s3cret-for-tests";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["A", "B"], prefix },
  submitter: { role: "submitter", queues: ["A", "B"], prefix },
  supervisor: { role: "supervisor", queues: ["A", "B"], prefix },
  workerA: { role: "worker", queues: ["A"], prefix },
  workerB: { role: "worker", queues: ["B"], prefix },
};

const usersConfig = (logFile: string): string => roleUsersConfig(logFile, password, users);

describe("least-privilege roles on a server with users", () => {
  let files: AuthFiles;
  let server: NatsServerHandle;
  let logFile: string;
  const runtimes: Runtime[] = [];
  const runtimeAs = async (
    user: keyof typeof users,
    { jobs, ...extra }: Parameters<typeof createRuntime>[0] = {},
  ) => {
    const request = users[user];
    const rt = await createRuntime({
      servers: server.url,
      prefix,
      auth: { user, pass: password },
      roles: request?.role,
      name: user,
      connection: { operationTimeoutMs: 4000, retry: { attempts: 1 } },
      ...extra,
      // Extra job options add to these, never replace them.
      jobs: { leaseMs: 1000, reapIntervalMs: 200, cleanupIntervalMs: 200, ...jobs },
    });
    runtimes.push(rt);
    return rt;
  };
  const rawAs = (user: string): Promise<NatsConnection> =>
    connect({ servers: server.url, user, pass: password, name: `raw-${user}` });

  beforeAll(async () => {
    files = await authFiles();
    logFile = path.join(files.dir, "server.log");
    server = await startNatsServer({ args: ["-c", await files.file("users.conf", usersConfig(logFile))] });
  });
  afterAll(async () => {
    await Promise.allSettled(runtimes.map((rt) => rt.stop()));
    await server?.dispose();
    await files?.remove();
  });

  it("runs jobs on two queues, each role with only its permissions; a worker of A is denied B", async () => {
    const admin = await runtimeAs("admin");
    await admin.admin.provision(["A", "B"]);
    await runtimeAs("supervisor");
    const submitter = await runtimeAs("submitter");
    // Job events read with the submitter's permissions: a watch of the records bucket of its own.
    const events = submitter.jobs.events();
    const ended: string[] = [];
    const reading = (async () => {
      for await (const e of events)
        if (e.type === "succeeded" || e.type === "failed") ended.push(`${e.jobId} ${e.type}`);
    })();
    await events.ready;
    const workerA = await runtimeAs("workerA");
    const workerB = await runtimeAs("workerB");

    // A worker-only runtime holds no other role's calls.
    await expect(workerA.jobs.submit({ queue: "A", tasks: [1] })).rejects.toBeInstanceOf(RoleNotHeld);
    await expect(workerA.admin.cleanup()).rejects.toBeInstanceOf(RoleNotHeld);
    expect(() => submitter.workers.start({ queue: "A", handler: () => 1 })).toThrow(RoleNotHeld);

    // Which worker ran which task: the handlers' own ledger.
    const seen: Array<{ worker: string; queue: string; index: number }> = [];
    // A consumer of its own, pulled by its name below.
    const jobB = await submitter.jobs.submit({ queue: "B", tasks: [0, 1, 2, 3, 4, 5], lane: false });

    // The worker of A, asked to work queue B, gets nothing of it.
    const stray = workerA.workers.start<number, number>({
      queue: "B",
      handler: (task) => {
        seen.push({ worker: "workerA", queue: "B", index: task.index });
        return task.payload;
      },
    });
    const rawA = await rawAs("workerA");
    const denied = await rawA
      .request(`$JS.API.CONSUMER.MSG.NEXT.${prefix}_tasks_B.${jobB.id}`, JSON.stringify({ batch: 1 }), {
        // The refusal comes at once; a busy machine must not turn it into a timeout.
        timeout: 10_000,
      })
      .then(
        () => "answered",
        (error: Error) => error.message,
      );
    expect(denied).toMatch(/permission/i);
    // A forged result for B's job is refused by the server.
    rawA.publish(`${prefix}.results.B.${jobB.id}`, JSON.stringify([{ i: 0, ok: true, r: 666 }]));
    await rawA.flush();
    // A window the stray worker of A has on B's job: nothing of it may be taken in it.
    await delay(1000);
    const jsmAdmin = await jetstreamManager(await rawAs("admin"));
    const pendingB = await jsmAdmin.consumers.info(`${prefix}_tasks_B`, jobB.id);
    expect(pendingB.num_pending + pendingB.num_ack_pending).toBe(6);
    await stray.stop();
    await rawA.close();

    const hangs = new Promise<never>(() => undefined);
    const a = workerA.workers.start<number, number>({
      queue: "A",
      concurrency: 4,
      stopTimeoutMs: 100,
      maxTaskMs: 300,
      handler: (task) => {
        seen.push({ worker: "workerA", queue: "A", index: task.index });
        if (task.index === 1) return hangs; // nobody answers: the supervisor's advisory path
        if (task.index === 2) throw new Error("always fails"); // the worker's own dead letter
        return task.payload * 10;
      },
    });
    const b = workerB.workers.start<number, number>({
      queue: "B",
      handler: (task) => {
        seen.push({ worker: "workerB", queue: "B", index: task.index });
        return task.payload * 10;
      },
    });
    const jobA = await submitter.jobs.submit({
      queue: "A",
      tasks: [0, 1, 2, 3, 4, 5, 6, 7],
      maxDeliver: 2,
      ackWaitMs: 400,
      maxFailures: 0.3,
    });
    // Each worker-only runtime announces itself under its own permissions; the submitter reads them.
    await waitUntil(async () => (await submitter.workers.list()).length === 2, {
      timeoutMs: 10_000,
      message: "both workers listed by the submitter",
    });
    expect((await submitter.workers.list()).map((w) => [w.queue, w.id])).toEqual([
      ["A", a.id],
      ["B", b.id],
    ]);
    const [endA, endB] = await Promise.all([jobA.done(), jobB.done()]);
    expect(endA).toMatchObject({ status: "succeeded", done: 6, dead: 2 });
    expect(endB).toMatchObject({ status: "succeeded", done: 6, dead: 0 });
    const letters = await submitter.jobs.deadLetters(jobA.id);
    expect(letters.map((l) => [l.index, l.source]).sort()).toEqual([
      [1, "advisory"],
      [2, "worker"],
    ]);
    const resultsB = [];
    for await (const r of jobB.results()) resultsB.push(r);
    expect(resultsB.map((r) => (r.ok ? r.result : r.error)).sort((x, y) => Number(x) - Number(y))).toEqual([
      0, 10, 20, 30, 40, 50,
    ]);

    // Each queue's tasks went to its own worker only.
    expect(seen.filter((s) => s.worker === "workerA").every((s) => s.queue === "A")).toBe(true);
    expect(new Set(seen.filter((s) => s.queue === "B").map((s) => s.worker))).toEqual(new Set(["workerB"]));

    await waitUntil(() => ended.length >= 2, { timeoutMs: 10_000, message: "both ends read as events" });
    expect(ended.sort()).toEqual([`${jobA.id} succeeded`, `${jobB.id} succeeded`].sort());
    await events.return();
    await reading;

    // Let every background loop (reaper, cleanup, takeover scans) run a few times.
    // The time must pass: a violation any of them makes would show in the server's log after it.
    await delay(1500);
    await Promise.all([a.stop(), b.stop()]);
    const logged = await loggedViolations(logFile);
    // Provoked above: the worker of A asked for queue B (its stray worker, the raw pull, the forged result).
    const provoked = (v: { user: string; subject: string }) =>
      v.user === "workerA" && /(perm_(tasks|advisories)_B(\.|$)|^perm\.results\.B\.)/.test(v.subject);
    console.info("violations the server logged:", JSON.stringify(logged));
    expect(logged.filter((v) => !provoked(v))).toEqual([]);
    // The provoked ones were seen by the server: the oracle can see a violation at all.
    expect(logged.some(provoked)).toBe(true);
  });
  it("runs lane jobs with a worker that holds the worker role only; a worker of A is denied B's lane", async () => {
    const names = brokerNames(prefix);
    // Provisioned here too, so this case also runs on its own.
    await (await runtimeAs("admin")).admin.provision(["A", "B"]);
    await runtimeAs("supervisor");
    const submitter = await runtimeAs("submitter", { jobs: { lane: true } });
    const workerA = await runtimeAs("workerA");
    const workerB = await runtimeAs("workerB");
    const jsm: JetStreamManager = await jetstreamManager(await rawAs("admin"));
    const consumersOf = async (queue: string) => {
      const found: string[] = [];
      for await (const c of jsm.consumers.list(names.tasksStream(queue))) found.push(c.name);
      return found.sort();
    };
    const logged = (await loggedViolations(logFile)).length;

    // Which worker ran which job's task: the handlers' own ledger.
    const seen: Array<{ worker: string; queue: string; n: number }> = [];
    const handler =
      (worker: string, queue: string) =>
      (task: { payload: number }): number => {
        seen.push({ worker, queue, n: task.payload });
        return task.payload * 10;
      };
    // The worker of A is up before the queue's first lane job, and is asked to work B as well.
    const a = workerA.workers.start<number, number>({
      queue: "A",
      concurrency: 4,
      handler: handler("workerA", "A"),
    });
    const stray = workerA.workers.start<number, number>({ queue: "B", handler: handler("workerA", "B") });
    const jobsA = await Promise.all(
      [0, 1, 2, 3, 4, 5].map((n) => submitter.jobs.submit({ queue: "A", tasks: [n] })),
    );
    const jobsB = await Promise.all(
      [0, 1, 2, 3, 4, 5].map((n) => submitter.jobs.submit({ queue: "B", tasks: [n] })),
    );
    // On the lane, as the server sees it: no consumer of any job's own.
    expect(await consumersOf("A")).toEqual(["lane"]);
    expect(await consumersOf("B")).toEqual(["lane"]);
    const endsA = await Promise.all(jobsA.map((j) => j.done()));
    expect(endsA.map((e) => [e.status, e.done])).toEqual(jobsA.map(() => ["succeeded", 1]));

    // B's lane, pulled by the worker of A, raw: the server refuses.
    const rawA = await rawAs("workerA");
    const denied = await rawA
      .request(
        `$JS.API.CONSUMER.MSG.NEXT.${names.tasksStream("B")}.lane`,
        JSON.stringify({ batch: 1, expires: 500_000_000 }),
        // The refusal comes at once; a busy machine must not turn it into a timeout.
        { timeout: 10_000 },
      )
      .then(
        () => "answered",
        (error: Error) => error.message,
      );
    expect(denied).toMatch(/permission/i);
    await rawA.close();
    // Nothing of B was taken meanwhile: its tasks wait on its lane, as the server stores them.
    // A window the stray worker of A still has on B's lane: nothing may be taken in it either.
    await delay(500);
    let waitingB = 0;
    for (const job of jobsB)
      waitingB += await storedCount(jsm, names.tasksStream("B"), names.laneSubject("B", job.id));
    expect(waitingB).toBe(jobsB.length);
    await stray.stop();

    const b = workerB.workers.start<number, number>({ queue: "B", handler: handler("workerB", "B") });
    const endsB = await Promise.all(jobsB.map((j) => j.done()));
    expect(endsB.map((e) => [e.status, e.done])).toEqual(jobsB.map(() => ["succeeded", 1]));
    const results = await Promise.all(
      [...jobsA, ...jobsB].map(async (job) => {
        for await (const r of job.results()) return r.ok ? r.result : r.error;
      }),
    );
    expect(results).toEqual([0, 10, 20, 30, 40, 50, 0, 10, 20, 30, 40, 50]);
    // Each task ran once, on its own queue's worker.
    const ran = (queue: string) =>
      seen
        .filter((s) => s.queue === queue)
        .map((s) => `${s.worker} ${s.n}`)
        .sort();
    expect(ran("A")).toEqual([0, 1, 2, 3, 4, 5].map((n) => `workerA ${n}`));
    expect(ran("B")).toEqual([0, 1, 2, 3, 4, 5].map((n) => `workerB ${n}`));
    await Promise.all([a.stop(), b.stop()]);

    // The lane lost (deleted by hand, or with the server's store): the next worker of A, a
    // runtime that holds the worker role only, makes it again and runs A's next lane job.
    await jsm.consumers.delete(names.tasksStream("A"), "lane");
    const again = (await runtimeAs("workerA")).workers.start<number, number>({
      queue: "A",
      handler: handler("workerA", "A"),
    });
    const late = await submitter.jobs.submit({ queue: "A", tasks: [6] });
    const lateEnd = await Promise.race([late.done(), delay(10_000).then(() => "still waiting for a lane")]);
    expect(lateEnd).toMatchObject({ status: "succeeded", done: 1 });
    expect(await consumersOf("A")).toEqual(["lane"]);
    expect(seen.filter((s) => s.n === 6)).toEqual([{ worker: "workerA", queue: "A", n: 6 }]);
    await again.stop();

    // No violation for a queue a worker may use; B's, asked by the worker of A, were seen by the server.
    const fresh = (await loggedViolations(logFile)).slice(logged);
    console.info("violations the server logged (lane):", JSON.stringify(fresh));
    const provoked = (v: { user: string; subject: string }) =>
      v.user === "workerA" && /perm_(tasks|advisories)_B(\.|$)/.test(v.subject);
    expect(fresh.filter((v) => !provoked(v))).toEqual([]);
    expect(fresh.some(provoked)).toBe(true);
  });

  it("a lane job cancelled before any worker took it, and one stalled too long, leave no task and no violation", async () => {
    const names = brokerNames(prefix);
    await (await runtimeAs("admin")).admin.provision(["A"]);
    // The defaults: a job of one task goes on the queue's lane. No worker of A runs here.
    const submitter = await runtimeAs("submitter");
    const jsm: JetStreamManager = await jetstreamManager(await rawAs("admin"));
    const logged = (await loggedViolations(logFile)).length;
    const cancelled = await submitter.jobs.submit({ queue: "A", tasks: [1] });
    const stalled = await submitter.jobs.submit({
      queue: "A",
      tasks: [2],
      stallAfterMs: 300,
      stalledTimeoutMs: 300,
    });
    // Its end removes its task by sequence ($JS.API.STREAM.MSG.DELETE): the submitter was
    // refused that, the cancel rejected with the record already written, and both tasks stayed.
    expect(await cancelled.cancel("not wanted")).toMatchObject({ status: "failed" });
    expect(await stalled.done()).toMatchObject({ status: "failed" });
    for (const job of [cancelled, stalled])
      expect(await storedCount(jsm, names.tasksStream("A"), names.laneSubject("A", job.id))).toBe(0);
    const fresh = (await loggedViolations(logFile)).slice(logged);
    expect(fresh.filter((v) => v.user === "submitter")).toEqual([]);
  });
});
