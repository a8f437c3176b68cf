/**
 * Testing a remote (HTTP) worker without NATS: the HTTP pull API runs on the
 * memory broker of `jetstate-jobs/testing` exactly as on NATS, so the worker is
 * tested against the real API, in-process, on a loopback port.
 * `npx vitest run examples/04-testing-a-remote-worker.test.ts`
 */
import { serve } from "@hono/node-server";
import { expect, it } from "vitest";
import { createHttpApi } from "../src/index.ts";
import { createTestRuntime } from "../src/testing.ts";
import { runRemoteWorker } from "./remote-worker.ts";

it("a remote worker drains a job through the HTTP API on the memory broker", async () => {
  const rt = await createTestRuntime();
  const token = "test-token-0123456789";
  const api = createHttpApi(rt, {
    tokens: { [token]: { identity: "box-1", role: "worker", queues: ["double"] } },
  });
  const http = serve({ fetch: api.fetch, hostname: "127.0.0.1", port: 0 });
  await new Promise((resolve) => http.once("listening", resolve));
  const { port } = http.address() as { port: number };
  const stop = new AbortController();
  try {
    const job = await rt.jobs.submit<{ n: number }, number>({ queue: "double", tasks: [{ n: 1 }, { n: 2 }] });
    const worker = runRemoteWorker<{ n: number }, number>({
      baseUrl: `http://127.0.0.1:${port}`,
      token,
      queue: "double",
      handler: (payload) => payload.n * 2,
      signal: stop.signal,
    });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 2 });
    const results: unknown[] = [];
    for await (const r of job.results()) results[r.index] = r.ok ? r.result : r.error;
    expect(results).toEqual([2, 4]);
    stop.abort();
    expect(await worker).toMatchObject({ processed: 2, failed: 0 });
  } finally {
    stop.abort();
    await new Promise((resolve) => http.close(resolve));
    await rt.stop();
  }
});
