/**
 * `createMetrics(rt)` scraped over its Fetch handler and read with the test's
 * own parser of the exposition format (test/harness/exposition.ts), on a real
 * nats-server and on the memory broker. The oracles: the test's own ledger of
 * every handler run (counters, redeliveries, the histogram's count), what the
 * test submitted with no worker on the queue (waiting tasks) and the time it
 * measured since (the oldest's age), the job's own end (jobs by status), the
 * workers the test started (workers alive), and on NATS the server the test
 * stops and starts again (connection state).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { createHttpApi } from "../../src/api/http.ts";
import { createMetrics, type Metrics } from "../../src/api/metrics.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { PermanentError } from "../../src/kernel/task-outcome.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { familiesOf, isScraped, parseExposition, type Sample, sampleValue } from "../harness/exposition.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const timeoutMs = 20_000;

interface Backend {
  readonly rt: Runtime;
  /** The nats-server, on NATS. */
  readonly server?: NatsServerHandle;
  stop(): Promise<void>;
}

const memoryBackend = async (): Promise<Backend> => {
  const rt = await createTestRuntime({ jobs: { cleanupIntervalMs: 0 } });
  return { rt, stop: () => rt.stop() };
};

const natsBackend = async (): Promise<Backend> => {
  const server = await startNatsServer();
  const rt = await createRuntime({
    servers: server.url,
    logger: silentLogger(),
    jobs: { cleanupIntervalMs: 0 },
    connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  });
  return {
    rt,
    server,
    stop: async () => {
      await rt.stop();
      await server.dispose();
    },
  };
};

/** One handler run, as the handler saw it. */
interface Run {
  readonly index: number;
  readonly attempt: number;
  readonly outcome: "ok" | "permanent" | "error";
}

/**
 * What each task does, by its index: 0 mod 4 fails for good, 1 mod 4 fails
 * its first attempt and then succeeds, 2 mod 4 fails every attempt (dead on
 * the last of `maxDeliver`), 3 mod 4 succeeds.
 */
const plan = (index: number, attempt: number): Run["outcome"] =>
  index % 4 === 0 ? "permanent" : index % 4 === 2 || (index % 4 === 1 && attempt === 1) ? "error" : "ok";

describe.each([
  { name: "nats", start: natsBackend },
  { name: "memory", start: memoryBackend },
])("metrics on $name", ({ name, start }) => {
  let backend: Backend;
  let metrics: Metrics;

  beforeAll(async () => {
    backend = await start();
    metrics = createMetrics(backend.rt, { scrapeTimeoutMs: 1000 });
  });
  afterAll(async () => {
    await metrics?.stop();
    await backend?.stop();
  });

  const scrape = async (): Promise<Sample[]> => {
    const response = await metrics.fetch(new Request("http://metrics.test/metrics"));
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseExposition(await response.text());
  };
  const scrapeUntil = async (what: string, ok: (samples: Sample[]) => boolean): Promise<Sample[]> => {
    let last: Sample[] = [];
    await waitUntil(
      async () => {
        last = await scrape();
        return ok(last);
      },
      { timeoutMs, intervalMs: 50, message: what },
    );
    return last;
  };

  it("task counters, redeliveries and the duration histogram's count equal the handler ledger; the job is counted running, then by its end", async () => {
    const { rt } = backend;
    const queue = `m-${name}`;
    const total = 16;
    const maxDeliver = 3;
    const ledger: Run[] = [];
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const worker = rt.workers.start<{ n: number }, number>({
      queue,
      concurrency: 4,
      handler: async (task) => {
        await gate;
        const outcome = plan(task.index, task.attempt);
        ledger.push({ index: task.index, attempt: task.attempt, outcome });
        if (outcome === "permanent") throw new PermanentError(`task ${task.index}: for good`);
        if (outcome === "error") throw new Error(`task ${task.index}: attempt ${task.attempt}`);
        return task.payload.n;
      },
    });
    const job = await rt.jobs.submit({
      queue,
      tasks: Array.from({ length: total }, (_, n) => ({ n })),
      maxFailures: 1,
      maxDeliver,
      backoff: [0],
    });
    // During: the job runs, its handlers wait at the gate, nothing is answered yet.
    const during = await scrapeUntil(
      "the job counted running",
      (s) => sampleValue(s, "jetstate_jobs", { queue, status: "running" }) === 1,
    );
    expect(sampleValue(during, "jetstate_tasks_done_total", { queue })).toBeUndefined();
    open();
    const end = await job.done();
    const ended = end.status;
    expect(ended).toBe("succeeded"); // maxFailures: every failure allowed
    const runs = () => ledger.length;
    const expected = {
      done: new Set(ledger.filter((r) => r.outcome === "ok").map((r) => r.index)).size,
      failed: new Set(ledger.filter((r) => r.outcome === "permanent").map((r) => r.index)).size,
      dead: new Set(
        ledger.filter((r) => r.outcome === "error" && r.attempt === maxDeliver).map((r) => r.index),
      ).size,
      redeliveries: ledger.filter((r) => r.attempt > 1).length,
    };
    // The plan's own arithmetic, so the ledger is the one the test meant.
    expect(expected).toEqual({ done: 8, failed: 4, dead: 4, redeliveries: 4 + 4 * (maxDeliver - 1) });
    const after = await scrapeUntil(
      "every answer counted and the job's end seen",
      (s) =>
        (sampleValue(s, "jetstate_tasks_done_total", { queue }) ?? 0) +
          (sampleValue(s, "jetstate_tasks_failed_total", { queue }) ?? 0) +
          (sampleValue(s, "jetstate_tasks_dead_total", { queue }) ?? 0) >=
          total && sampleValue(s, "jetstate_jobs_finished_total", { queue, status: ended }) === 1,
    );
    expect({
      done: sampleValue(after, "jetstate_tasks_done_total", { queue }),
      failed: sampleValue(after, "jetstate_tasks_failed_total", { queue }),
      dead: sampleValue(after, "jetstate_tasks_dead_total", { queue }),
      redeliveries: sampleValue(after, "jetstate_task_redeliveries_total", { queue }),
    }).toEqual(expected);
    expect(sampleValue(after, "jetstate_task_duration_seconds_count", { queue })).toBe(runs());
    expect(sampleValue(after, "jetstate_task_duration_seconds_bucket", { queue, le: "+Inf" })).toBe(runs());
    expect(sampleValue(after, "jetstate_jobs", { queue, status: "running" })).toBeUndefined();
    await worker.stop();
  });

  it("waiting tasks with no worker equal what was submitted; the oldest's age is at least the time waited", async () => {
    const { rt } = backend;
    const queue = `idle-${name}`;
    const total = 7;
    const beforeSubmit = Date.now();
    await rt.jobs.submit({ queue, tasks: Array.from({ length: total }, (_, n) => ({ n })) });
    const committedAt = Date.now();
    let scrapeStartedAt = 0;
    let scrapeEndedAt = 0;
    let samples: Sample[] = [];
    await waitUntil(
      async () => {
        scrapeStartedAt = Date.now();
        samples = await scrape();
        scrapeEndedAt = Date.now();
        return scrapeStartedAt - committedAt >= 1000;
      },
      { timeoutMs, intervalMs: 100, message: "a scrape a second after the submit" },
    );
    expect(sampleValue(samples, "jetstate_queue_waiting_tasks", { queue })).toBe(total);
    // Metrics started after the submit: nothing answered, so no record change tells them of the job;
    // the one page of live records they read at their start does.
    const late = createMetrics(rt, { registry: new Registry(), queues: [queue] });
    await waitUntil(
      async () =>
        sampleValue(parseExposition(await late.metrics()), "jetstate_jobs", { queue, status: "running" }) ===
        1,
      { timeoutMs, message: "the job live before the metrics started counted running" },
    );
    await late.stop();
    const ageMs = (sampleValue(samples, "jetstate_queue_oldest_waiting_seconds", { queue }) ?? 0) * 1000;
    // Stored before the submit resolved, after the test started it: bounds measured by the test.
    expect(ageMs).toBeGreaterThanOrEqual(scrapeStartedAt - committedAt - 1);
    expect(ageMs).toBeLessThanOrEqual(scrapeEndedAt - beforeSubmit + 1);
    const worker = rt.workers.start({ queue, handler: () => "ok" });
    const drained = await scrapeUntil(
      "the queue drained by a worker",
      (s) => sampleValue(s, "jetstate_queue_waiting_tasks", { queue }) === 0,
    );
    expect(sampleValue(drained, "jetstate_queue_oldest_waiting_seconds", { queue })).toBe(0);
    // Workers alive on the queue: none before the test started one (the queue known: 0), the ones
    // the test started, and none once they stopped.
    expect(sampleValue(samples, "jetstate_workers", { queue })).toBe(0);
    const second = rt.workers.start({ queue, handler: () => "ok" });
    await scrapeUntil("two workers seen", (s) => sampleValue(s, "jetstate_workers", { queue }) === 2);
    await worker.stop();
    await second.stop();
    await scrapeUntil("no worker seen", (s) => sampleValue(s, "jetstate_workers", { queue }) === 0);
  });

  it("tasks answered through the HTTP API count as a native worker's: the remote worker's own ledger", async () => {
    const { rt } = backend;
    const queue = `h-${name}`;
    const api = createHttpApi(rt, {
      tokens: { "remote-worker-token-1234": { identity: "gpu-box", role: "worker", queues: "*" } },
    });
    const post = async (path: string, body: unknown) => {
      const response = await api.fetch(
        new Request(`http://api.test${path}`, {
          method: "POST",
          headers: { authorization: "Bearer remote-worker-token-1234", "content-type": "application/json" },
          body: JSON.stringify(body),
        }),
      );
      return { status: response.status, json: (await response.json()) as Record<string, unknown> };
    };
    // Task 0 fails for good, task 1 fails once then succeeds, tasks 2 and 3 succeed.
    // Reserved by its id: a job with a consumer of its own.
    const job = await rt.jobs.submit({
      queue,
      tasks: [0, 1, 2, 3],
      maxFailures: 1,
      backoff: [0],
      lane: false,
    });
    const ledger: Array<{ index: number; attempt: number; answer: "result" | "permanent" | "retry" }> = [];
    await waitUntil(
      async () => {
        const reserved = await post(`/jobs/${job.id}/tasks`, { batch_size: 10 });
        expect(reserved.status, JSON.stringify(reserved.json)).toBe(200);
        const tasks = reserved.json.tasks as Array<{ index: number; attempt: number; receipt: string }>;
        if (tasks.length === 0) return ledger.filter((l) => l.answer !== "retry").length === 4;
        const results = tasks.map((t) => {
          const answer = t.index === 0 ? "permanent" : t.index === 1 && t.attempt === 1 ? "retry" : "result";
          ledger.push({ index: t.index, attempt: t.attempt, answer });
          return answer === "result"
            ? { receipt: t.receipt, result: t.index }
            : {
                receipt: t.receipt,
                error: { message: `task ${t.index}`, permanent: answer === "permanent" },
              };
        });
        const answered = await post(`/jobs/${job.id}/results`, { results });
        expect(answered.status, JSON.stringify(answered.json)).toBe(200);
        return ledger.filter((l) => l.answer !== "retry").length === 4;
      },
      { timeoutMs, intervalMs: 50, message: "every task answered by the remote worker" },
    );
    expect(await job.done()).toMatchObject({ done: 3, failed: 1 });
    const samples = await scrapeUntil(
      "the remote answers counted",
      (s) => sampleValue(s, "jetstate_tasks_done_total", { queue }) === 3,
    );
    expect(sampleValue(samples, "jetstate_tasks_done_total", { queue })).toBe(
      ledger.filter((l) => l.answer === "result").length,
    );
    expect(sampleValue(samples, "jetstate_tasks_failed_total", { queue })).toBe(
      ledger.filter((l) => l.answer === "permanent").length,
    );
    expect(sampleValue(samples, "jetstate_task_redeliveries_total", { queue })).toBe(
      ledger.filter((l) => l.attempt > 1).length,
    );
  });

  it("a job nothing answers for stallAfterMs is counted stalled once, and running again once answered", async () => {
    const { rt } = backend;
    const queue = `stall-${name}`;
    const job = await rt.jobs.submit({ queue, tasks: [1, 2], stallAfterMs: 300 });
    const stalled = await scrapeUntil(
      "the stall counted",
      (s) => sampleValue(s, "jetstate_job_stalls_total", { queue }) === 1,
    );
    // The job's own actor says stalled too (the metrics read the records, not the actor).
    expect(job.snapshot().status).toBe("stalled");
    expect(sampleValue(stalled, "jetstate_jobs", { queue, status: "stalled" })).toBe(1);
    expect(sampleValue(stalled, "jetstate_jobs", { queue, status: "running" })).toBeUndefined();
    const worker = rt.workers.start({ queue, handler: () => "ok" });
    expect((await job.done()).status).toBe("succeeded");
    const ended = await scrapeUntil(
      "the end seen",
      (s) => sampleValue(s, "jetstate_jobs_finished_total", { queue, status: "succeeded" }) === 1,
    );
    expect(sampleValue(ended, "jetstate_job_stalls_total", { queue })).toBe(1);
    expect(sampleValue(ended, "jetstate_jobs", { queue, status: "stalled" })).toBeUndefined();
    await worker.stop();
  });

  it.runIf(name === "nats")(
    "connection state follows a stop and a start of the server; the reconnect is counted",
    async () => {
      const server = backend.server as NatsServerHandle;
      const state = (s: Sample[]) =>
        s.filter((x) => x.name === "jetstate_connection_state" && x.value === 1).map((x) => x.labels.state);
      const up = await scrapeUntil("the connection seen up", (s) => state(s).includes("connected"));
      expect(state(up)).toEqual(["connected"]);
      const reconnectsBefore = sampleValue(up, "jetstate_connection_reconnects_total") ?? 0;
      await server.stop();
      const down = await scrapeUntil("the connection seen down", (s) => !state(s).includes("connected"));
      expect(state(down)).toHaveLength(1);
      // The scrape answered though the queues could not be read (bounded by scrapeTimeoutMs).
      await scrapeUntil(
        "a failed queue read counted",
        (s) => (sampleValue(s, "jetstate_scrape_read_errors_total", { read: "queues" }) ?? 0) >= 1,
      );
      await server.restart();
      const back = await scrapeUntil("the connection seen back", (s) => state(s).includes("connected"));
      expect(state(back)).toEqual(["connected"]);
      expect(sampleValue(back, "jetstate_connection_reconnects_total")).toBe(reconnectsBefore + 1);
    },
  );

  it.runIf(name === "nats")(
    "every metric the Grafana dashboard and the alert rules use is a family of a real scrape; both files parse",
    async () => {
      const root = path.resolve(import.meta.dirname, "../..");
      const dashboard = JSON.parse(readFileSync(path.join(root, "deploy/grafana/jetstate.json"), "utf8")) as {
        panels: Array<{ targets: Array<{ expr: string }> }>;
        templating: { list: Array<{ definition?: string }> };
      };
      const rules = parseYaml(
        readFileSync(path.join(root, "deploy/prometheus/jetstate-alerts.yml"), "utf8"),
      ) as {
        groups: Array<{ rules: Array<{ alert: string; expr: string; for?: string }> }>;
      };
      const alerts = rules.groups.flatMap((g) => g.rules);
      expect(alerts.map((r) => r.alert).sort()).toEqual([
        "JetstateDeadTasks",
        "JetstateNoWorker",
        "JetstateTaskNotPickedUp",
      ]);
      const expressions = [
        ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)),
        ...dashboard.templating.list.flatMap((v) => (v.definition ? [v.definition] : [])),
        ...alerts.map((r) => r.expr),
      ];
      const used = new Set(expressions.flatMap((e) => e.match(/\bjetstate_[a-z_]+\b/g) ?? []));
      expect(used.size).toBeGreaterThanOrEqual(12);
      // A worker alive, so that the scrape is what a running deployment serves.
      const worker = backend.rt.workers.start({ queue: "deploy-check", handler: () => "ok" });
      const response = await metrics.fetch(new Request("http://metrics.test/metrics"));
      const families = familiesOf(await response.text());
      await worker.stop();
      expect([...used].filter((n) => !isScraped(families, n))).toEqual([]);
    },
  );
});
