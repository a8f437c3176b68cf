import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

describe("jobs end to end", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({ servers: server.url, logger: pino({ level: process.env.LOG_LEVEL ?? "silent" }) });
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });

  it("1000 tasks, 4 workers: succeeded, every result once", async () => {
    const workers = Array.from({ length: 4 }, () =>
      rt.workers.start<{ n: number }, number>({ queue: "detect", concurrency: 8, handler: async (t) => t.payload.n * 2 }),
    );
    const job = await rt.jobs.submit({ queue: "detect", tasks: Array.from({ length: 1000 }, (_, n) => ({ n })) });
    const final = await job.done();
    expect(final).toMatchObject({ status: "succeeded", done: 1000, failed: 0, total: 1000 });
    const seen = new Map<number, unknown>();
    for await (const r of job.results()) {
      expect(seen.has(r.index)).toBe(false);
      seen.set(r.index, r.ok ? r.result : r.error);
    }
    expect(seen.size).toBe(1000);
    expect(seen.get(7)).toBe(14);
    await Promise.all(workers.map((w) => w.stop()));
    expect(await server.connectionCount()).toBe(1);
  });
});
