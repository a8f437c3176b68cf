/**
 * Review of b20ca61 (redrive removes dead tasks' own messages, by sequence and index): an HTTP
 * worker's dead letter names no task message (`taskSeq`), though its delivery's reference
 * holds the sequence (`taskPayload` reads the task by it). A task that died at an HTTP worker
 * whose term was lost stays stored through a redrive, and its advisory's dead answer, stored
 * after the redrive's marker, counts as the copy's (the case redrive-term-lost.both.test.ts
 * guards for native workers). Memory broker; the term lost by a proxy on the broker's leasing.
 */
import { afterEach, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { TaskLeasing } from "../../src/adapters/task-leasing.ts";
import { createHttpApi } from "../../src/index.ts";
import { type ServedApp, serveOnLoopback } from "../harness/http-server.ts";
import { memorySide, type RedriveSide } from "../harness/redrive-sides.ts";

const TOKEN = "token-alice-0123456789";
let side: RedriveSide | undefined;
let http: ServedApp | undefined;
const stops: Array<() => Promise<void>> = [];

afterEach(async () => {
  await http?.close();
  for (const stop of stops.splice(0)) await stop();
  await side?.dispose();
});

const bound = <T extends object>(target: T, overrides: Partial<Record<keyof T, unknown>>): T =>
  new Proxy(target, {
    get(t, p) {
      if (p in overrides) return (overrides as Record<string | symbol, unknown>)[p];
      const v = Reflect.get(t, p, t);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });

it("an HTTP worker's dead task whose term was lost is removed by its redrive", {
  timeout: 30_000,
}, async () => {
  side = await memorySide();
  let lostTerms = 0;
  const rt = await side.runtime("a", (inner: Broker) => {
    const leasing = inner.taskLeasing;
    const settle: TaskLeasing["settle"] = (settles, notAfter) => {
      const kept = settles.filter((s) => s.action !== "term");
      lostTerms += settles.length - kept.length;
      return kept.length === 0 ? Promise.resolve([] as never) : leasing.settle(kept, notAfter);
    };
    return bound(inner, { taskLeasing: bound(leasing, { settle }) });
  });
  stops.push(() => rt.stop());
  const api = createHttpApi(rt, { tokens: { [TOKEN]: "alice" } });
  http = await serveOnLoopback(api.fetch);
  const call = async (path: string, body: unknown) => {
    const r = await fetch(`${http!.baseUrl}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    // biome-ignore lint/suspicious/noExplicitAny: checked by field
    return { status: r.status, json: (await r.json()) as any };
  };
  const queue = "http_term_lost";
  const job = await rt.jobs.submit<number, number>({
    queue,
    tasks: [1, 2],
    maxDeliver: 1,
    backoff: [0],
    ackWaitMs: 5_000,
    maxFailures: 1,
  });
  const leased = await call(`/jobs/${job.id}/tasks`, { batch_size: 2 });
  expect(leased.status, JSON.stringify(leased.json)).toBe(200);
  const zero = leased.json.tasks.find((t: { index: number }) => t.index === 0);
  expect(zero).toBeDefined();
  const dead = await call(`/jobs/${job.id}/results`, {
    results: [{ receipt: zero.receipt, error: { message: "upstream down" } }],
  });
  expect(dead.json.results).toEqual([{ id: `${job.id}.0`, status: "dead" }]);
  expect(lostTerms).toBe(1);
  // Task 0's message is stored still (its term lost), and task 1's (leased, unanswered).
  expect(await side.storedTasks(queue, job.id)).toBe(2);
  const [letter] = await rt.jobs.deadLetters(job.id);
  expect(letter).toMatchObject({ index: 0, source: "worker" });
  await rt.jobs.redrive(job.id, [0]);
  // Task 1 and the copy of task 0; the old message of task 0 gone, as a native worker's is.
  expect(await side.storedTasks(queue, job.id)).toBe(2);
});
