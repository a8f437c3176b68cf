/**
 * Prometheus metrics of a runtime: a job whose handler fails some tasks, then
 * the scrape Prometheus would read at GET /metrics (`npx tsx examples/05-metrics.ts`;
 * in memory, or on NATS with NATS_URL). Serve it with
 * `serve({ fetch: metrics.fetch, port: 9464 })` from @hono/node-server, or any
 * Fetch-API server; deploy/ has a Grafana dashboard and alert rules for it.
 */
import { pino } from "pino";
import { createMetrics, createRuntime, PermanentError } from "../src/index.ts";

const logger = pino({ level: "error" });
const rt = await createRuntime(process.env.NATS_URL ? { logger } : { broker: "memory", logger });
const metrics = createMetrics(rt);

const worker = rt.workers.start<number, number>({
  queue: "square",
  handler: (task) => {
    if (task.payload % 5 === 0) throw new PermanentError("multiples of 5 are refused");
    return task.payload * task.payload;
  },
});
const job = await rt.jobs.submit<number, number>({
  queue: "square",
  tasks: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  maxFailures: 0.5,
});
console.log("job", (await job.done()).status);

const response = await metrics.fetch(new Request("http://localhost/metrics"));
const text = await response.text();
console.log(
  text
    .split("\n")
    .filter((line) => line.startsWith("jetstate_") && !line.includes("_bucket"))
    .join("\n"),
);

await worker.stop();
await metrics.stop();
await rt.stop();
