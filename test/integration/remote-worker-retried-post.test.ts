/**
 * examples/remote-worker.ts, its results POST retried after the first one
 * landed (its response lost: a 503 here, from a proxy in front of the API):
 * the API answers the same answers posted again 200, each item `duplicate`
 * with the first answer's status, not 409 (that is for another answer), and
 * the worker counts each task once. Its comment said the retried POST got
 * 409. The oracles: the requests the proxy saw, the job's end and the
 * worker's stats.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { runRemoteWorker } from "../../examples/remote-worker.ts";
import { createHttpApi } from "../../src/api/http.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { type ServedApp, serveOnLoopback } from "../harness/http-server.ts";
import { within } from "../harness/wait.ts";

const token = "remote-retried-token-0123";
let rt: Runtime;
let http: ServedApp;
/** Each results POST: the status the API gave, and whether its items said duplicate. */
const posts: { status: number; duplicate: boolean[] }[] = [];

beforeAll(async () => {
  rt = await createTestRuntime({ jobs: { lane: false } });
  const api = createHttpApi(rt, { tokens: { [token]: "box-1" } });
  http = await serveOnLoopback(async (request) => {
    if (!/\/results$/.test(new URL(request.url).pathname)) return api.fetch(request);
    const response = await api.fetch(request);
    const body = (await response.clone().json()) as { results?: { duplicate?: boolean }[] };
    posts.push({ status: response.status, duplicate: (body.results ?? []).map((r) => r.duplicate === true) });
    // The first one landed, but its answer is lost on the way back.
    if (posts.length === 1)
      return Response.json({ error: { code: "unavailable", message: "lost" } }, { status: 503 });
    return response;
  });
});
afterAll(async () => {
  await http?.close();
  await rt?.stop();
});

it("a results POST retried after it landed is answered 200 duplicate, and counted once", async () => {
  const job = await rt.jobs.submit<number, number>({ queue: "retried", tasks: [1, 2] });
  const stop = new AbortController();
  const worker = runRemoteWorker<number, number>({
    baseUrl: http.baseUrl,
    token,
    queue: "retried",
    batchSize: 2,
    signal: stop.signal,
    handler: (n) => n * 2,
  });
  try {
    expect(await within(job.done(), 15_000)).toMatchObject({ status: "succeeded", done: 2 });
  } finally {
    stop.abort();
  }
  const stats = await worker;
  expect(posts).toEqual([
    { status: 200, duplicate: [false, false] },
    { status: 200, duplicate: [true, true] },
  ]);
  expect(stats).toMatchObject({ processed: 2, dropped: 0, failed: 0 });
});
