/**
 * A worker whose NATS user has exactly the permissions `natsPermissions()`
 * gives the worker role, the server back with an empty store and no admin
 * to provision it again. The worker may not make the shared streams and
 * buckets it uses (the results stream, the presence bucket, ...): it must
 * not ask for them again and again (each refusal a violation in the
 * server's log), must say once at warn why it cannot work, and must run
 * its tasks, unrestarted, once an admin provisions again. The oracles: the
 * server's log of permission violations and the handlers' own ledger.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { capturedLog } from "../harness/log-lines.ts";
import { type RoleServer, startRoleServer } from "../harness/role-server.ts";
import { waitUntil, within } from "../harness/wait.ts";

const prefix = "permw";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["Q"], prefix },
  submitter: { role: "submitter", queues: ["Q"], prefix },
  worker: { role: "worker", queues: ["Q"], prefix },
};
const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => i + from);

describe("a least-privilege worker, the server back with an empty store and no admin", () => {
  let roles: RoleServer;

  beforeAll(async () => {
    roles = await startRoleServer(users, {
      prefix,
      // Back within a tenth of a second of the server (as long as its restart takes).
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 1000 },
      jobs: { cleanupIntervalMs: 0 },
    });
  });
  afterAll(async () => {
    await roles?.stop();
  });

  it("asks a bounded number of times, says why once at warn, and runs again once an admin provisions", async () => {
    const queue = "Q";
    const admin = await roles.runtimeAs("admin");
    await admin.admin.provision([queue]);
    await admin.stop();
    const submitter = await roles.runtimeAs("submitter");
    const workerLog = capturedLog("debug");
    const worker = await roles.runtimeAs("worker", workerLog.logger);
    // The handlers' ledger: every call, by payload.
    const calls: number[] = [];
    const serving = worker.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: async (task) => {
        calls.push(task.payload);
        return task.payload * 2;
      },
    });
    const first = await submitter.jobs.submit({ queue, tasks: range(4), ackWaitMs: 30_000 });
    expect(await within(first.done(), 20_000)).toMatchObject({ status: "succeeded", done: 4 });
    expect([...calls].sort((a, b) => a - b)).toEqual(range(4));
    const workerViolations = async () => (await roles.violations()).filter((v) => v.user === "worker");
    expect(await workerViolations()).toEqual([]);

    await roles.restartEmpty();
    // The worker is back on the server and refused at least once (what it may not make).
    await waitUntil(async () => (await workerViolations()).length >= 1, {
      timeoutMs: 20_000,
      message: "the worker refused something after the reset",
    });
    // A span with nobody to provision: the refusals in it are the worker's retries, which must be
    // paced (an absence of a flood needs a span).
    const spanMs = 6_000;
    const before = (await workerViolations()).length;
    const since = Date.now();
    await waitUntil(() => Date.now() - since >= spanMs, { timeoutMs: spanMs * 2, message: "the span" });
    const refused = await workerViolations();
    const inSpan = refused.length - before;
    const perSubject = new Map<string, number>();
    for (const v of refused) perSubject.set(v.subject, (perSubject.get(v.subject) ?? 0) + 1);
    const mostOfOne = Math.max(...perSubject.values());
    // Said once, at warn, for the runtime (not once per loop that needed it), naming the remedy.
    const told = workerLog.lines.filter((l) => l.level >= 40 && /an admin must provision/.test(l.msg));
    // Each refused create is asked for once in the outage (not again within a minute; the
    // presence bucket's first ask may fall in the span, with the next announcement).
    expect(
      { mostOfOne, told: told.length },
      `${before} refused before the span, ${inSpan} in ${spanMs} ms: ${[...perSubject].map(([s, n]) => `${s} ×${n}`).join(", ")}; warnings: ${told.map((l) => l.msg).join(" | ")}`,
    ).toEqual({ mostOfOne: 1, told: 1 });
    expect(calls).toHaveLength(4);

    // An admin provisions again; the same worker, not restarted, runs the next job.
    const again = await roles.runtimeAs("admin");
    await again.admin.provision([queue]);
    const provisionedAt = Date.now();
    const tasks = range(6, 100);
    const next = await submitter.jobs.submit({ queue, tasks, ackWaitMs: 30_000 });
    // The worker looks again for what it missed on its loops' backoff (5 s apart at most): it
    // took about 5 s here. The deadline is for a slow machine.
    const outcome = await within(next.done(), 40_000);
    expect(outcome, `${Date.now() - provisionedAt} ms after the provision`).toMatchObject({
      status: "succeeded",
      done: 6,
      total: 6,
    });
    expect(calls.filter((c) => c >= 100).sort((a, b) => a - b)).toEqual(tasks);
    expect(calls).toHaveLength(10);
    await serving.stop();
  }, 120_000);
});
