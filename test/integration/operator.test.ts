/**
 * The on-call story of issue #18 on its three surfaces at once: the CLI, the
 * dashboard its `dashboard` command serves, and the Prometheus endpoint it
 * serves beside it (`--metrics`). A job nobody works stalls; all three say
 * why (no worker alive on its queue, its tasks waiting); a worker comes, two
 * tasks die; the dashboard's redrive brings them back and `jobs watch` sees
 * the job succeed. Each surface's numbers are checked against the oracles
 * none of them shares (the handler's own ledger, what the test submitted, the
 * record read raw) and so against each other.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import type { Worker } from "../../src/api/worker-options.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type BuiltCli, buildCli, type CliRun, runCli } from "../harness/cli.ts";
import { parseExposition, sampleValue } from "../harness/exposition.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

interface Run {
  readonly index: number;
  readonly attempt: number;
  readonly ok: boolean;
}

interface Counts {
  readonly status: string;
  readonly done: number;
  readonly failed: number;
  readonly dead: number;
}

describe("the on-call story: CLI, dashboard and metrics agree", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let cli: BuiltCli;
  let nc: NatsConnection;
  let dashboard: ChildProcessWithoutNullStreams | undefined;
  let worker: Worker | undefined;

  beforeAll(async () => {
    [server, cli] = await Promise.all([startNatsServer(), buildCli()]);
    // A short lease: a job the dashboard redrives (its runtime supervises nothing) is taken over here soon.
    rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      presenceMs: 1_500,
      jobs: { leaseMs: 1_000 },
    });
    nc = await connect({ servers: server.url });
  });
  afterAll(async () => {
    dashboard?.kill("SIGTERM");
    await worker?.stop();
    await rt?.stop();
    await nc?.close();
    await cli?.remove();
    await server?.dispose();
  });

  const run = (args: readonly string[]): Promise<CliRun> => runCli(cli.bin, args, { NATS_URL: server.url });
  const cliJson = async <T>(args: readonly string[]): Promise<T> => {
    const r = await run([...args, "--json"]);
    expect(r.code, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  const rawRecord = async (id: string) =>
    (await (await new Kvm(nc).open("jetstate_jobs")).get(id))?.json<{
      status: string;
      counts: { done: number; failed: number; dead: number };
    }>();

  it("a stalled job: every surface says no worker is alive and its tasks wait; redriven from the dashboard, it ends succeeded", async () => {
    // The dashboard and its metrics, served by the CLI as an engineer would start them.
    const child = spawn(
      process.execPath,
      [cli.bin, "dashboard", "--port", "0", "--metrics-port", "0", "--json"],
      {
        env: { ...process.env, NATS_URL: server.url },
      },
    );
    dashboard = child;
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      err += chunk.toString();
    });
    await waitUntil(() => out.includes("\n"), {
      timeoutMs: 20_000,
      message: `the dashboard's URL (stderr: ${err})`,
    });
    const served = JSON.parse(out.split("\n")[0] as string) as { url: string; metrics: string };
    const base = new URL(served.url);
    const token = base.hash.replace(/^#token=/, "");
    expect(token.length).toBeGreaterThan(20);
    const api = async <T>(path: string, init: RequestInit = {}): Promise<T> => {
      const response = await fetch(new URL(path, base), {
        ...init,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      });
      expect(response.status, `${path}: ${await response.clone().text()}`).toBe(200);
      return (await response.json()) as T;
    };
    const scrape = async () => parseExposition(await (await fetch(served.metrics)).text());
    // The metrics have a listener of their own: the dashboard's port serves none without a token.
    expect(new URL(served.metrics).port).not.toBe(base.port);
    expect((await fetch(new URL("/metrics", base))).status).not.toBe(200);
    // Without the token, the dashboard answers nothing.
    expect((await fetch(new URL("/api/overview", base))).status).toBe(401);

    // 1. Six tasks and no worker: the job stalls.
    const tasks = [0, 1, 2, 3, 4, 5];
    const job = await rt.jobs.submit({
      queue: "ops",
      tasks,
      stallAfterMs: 500,
      maxDeliver: 2,
      maxFailures: 0.5,
      backoff: [50],
    });
    await waitUntil(async () => (await rawRecord(job.id))?.status === "stalled", {
      timeoutMs: 10_000,
      message: "the record says stalled",
    });
    const shown = await cliJson<{ reasons: { kind: string }[]; job: Counts }>(["jobs", "show", job.id]);
    expect(shown.reasons.map((r) => r.kind)).toEqual(["no-worker", "stalled"]);
    await waitUntil(
      async () => {
        const overview = await api<{
          queues: { name: string; workers: number; unanswered: number }[];
          jobs: Counts[];
        }>("/api/overview");
        return (
          overview.queues.some((q) => q.name === "ops" && q.workers === 0 && q.unanswered === tasks.length) &&
          overview.jobs[0]?.status === "stalled"
        );
      },
      { timeoutMs: 10_000, message: "the dashboard shows the job stalled, no worker on its queue" },
    );
    await waitUntil(
      async () => sampleValue(await scrape(), "jetstate_jobs", { queue: "ops", status: "stalled" }) === 1,
      { timeoutMs: 10_000, message: "the metrics count the job stalled" },
    );
    const stalled = await scrape();
    expect(sampleValue(stalled, "jetstate_workers", { queue: "ops" })).toBe(0);
    // As many as the test submitted wait on the queue.
    expect(sampleValue(stalled, "jetstate_queue_waiting_tasks", { queue: "ops" })).toBe(tasks.length);

    // 2. A worker whose handler fails tasks 4 and 5 on every delivery: they die.
    let broken = true;
    const ledger: Run[] = [];
    worker = rt.workers.start<number, number>({
      queue: "ops",
      handler: (task) => {
        const ok = !(broken && task.index >= 4);
        ledger.push({ index: task.index, attempt: task.attempt, ok });
        if (!ok) throw new Error(`broken on ${task.index}`);
        return task.payload;
      },
    });
    const first = await job.done();
    const died = [...new Set(ledger.filter((r) => !r.ok).map((r) => r.index))].sort();
    expect(died).toEqual([4, 5]);
    const expected = { status: "succeeded", done: 4, failed: 0, dead: 2 };
    expect(first).toMatchObject(expected);
    expect(await rawRecord(job.id)).toMatchObject({
      status: "succeeded",
      counts: { done: 4, failed: 0, dead: 2 },
    });
    const afterRun = await cliJson<{
      reasons: { kind: string }[];
      job: { status: string; counts: Omit<Counts, "status"> };
    }>(["jobs", "show", job.id]);
    expect({ status: afterRun.job.status, ...afterRun.job.counts }).toMatchObject(expected);
    expect(afterRun.reasons.map((r) => r.kind)).toEqual(["dead-tasks"]);
    await waitUntil(async () => (await api<Counts>(`/api/jobs/${job.id}`)).status === "succeeded", {
      timeoutMs: 10_000,
      message: "the dashboard shows the end",
    });
    expect(await api<Counts>(`/api/jobs/${job.id}`)).toMatchObject(expected);
    expect((await cliJson<{ index: number }[]>(["dlq", "ls", job.id])).map((l) => l.index).sort()).toEqual(
      died,
    );
    await waitUntil(
      async () => {
        const samples = await scrape();
        return (
          sampleValue(samples, "jetstate_jobs_finished_total", { queue: "ops", status: "succeeded" }) === 1 &&
          (sampleValue(samples, "jetstate_jobs", { queue: "ops", status: "stalled" }) ?? 0) === 0 &&
          sampleValue(samples, "jetstate_workers", { queue: "ops" }) === 1
        );
      },
      { timeoutMs: 10_000, message: "the metrics: one job succeeded, none stalled, one worker alive" },
    );

    // 3. The handler fixed; the dashboard's redrive (an operate token's action); the CLI watches it end.
    broken = false;
    await api(`/api/jobs/${job.id}/redrive`, { method: "POST", body: "{}" });
    // Started after the redrive answered: the job it follows is the reopened one, to its new end.
    const watched = await run(["jobs", "watch", job.id]);
    expect(watched.code, watched.stderr).toBe(0);
    expect(watched.stdout.trim().split("\n").at(-1)).toMatch(/^succeeded 6\/6 done 6 failed 0 dead 0 /);
    expect(
      ledger
        .filter((r) => r.ok && r.index >= 4)
        .map((r) => r.index)
        .sort(),
    ).toEqual([4, 5]);
    const redriven = { status: "succeeded", done: 6, failed: 0, dead: 0 };
    expect(await rawRecord(job.id)).toMatchObject({
      status: "succeeded",
      counts: { done: 6, failed: 0, dead: 0 },
    });
    await waitUntil(async () => (await api<Counts>(`/api/jobs/${job.id}`)).done === 6, {
      timeoutMs: 10_000,
      message: "the dashboard shows the redriven job's end",
    });
    expect(await api<Counts>(`/api/jobs/${job.id}`)).toMatchObject(redriven);
    expect(await cliJson<unknown[]>(["dlq", "ls", job.id])).toEqual([]);

    // SIGTERM (a service manager's stop): the dashboard stops its runtime and exits 0.
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    dashboard = undefined;
  }, 90_000);
});
