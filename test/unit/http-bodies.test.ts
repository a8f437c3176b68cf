/**
 * The document served at /openapi.json and the decoder of the request bodies
 * come from the same schemas (bodies.ts); this holds them to it from outside:
 * every body is sent to the app and checked against the served document with
 * a JSON Schema validator (Ajv, draft 2020-12, the dialect of OpenAPI 3.1).
 * A body one accepts and the other refuses fails here, and so does a
 * response, error or not, that its documented schema does not describe.
 */
import { Ajv2020 } from "ajv/dist/2020.js";
import { beforeAll, describe, expect, it } from "vitest";
import { BearerTokens } from "../../src/adapters/http/bearer-tokens.ts";
import { createHttpApp } from "../../src/adapters/http/http-app.ts";
import type { TaskLeases } from "../../src/adapters/http/task-leases.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

const WORKER = "a-worker-token-0123";
const READER = "a-reader-token-0123";
const limits = { maxBatchSize: 50, maxResults: 10, maxBodyBytes: 4096 };

const leases = {
  reserve: async (jobId: string, max: number) =>
    Array.from({ length: max }, (_, index) => ({
      id: `${jobId}.${index}`,
      jobId,
      index,
      attempt: 1,
      payload: { n: index },
      receipt: `receipt-${index}`,
      leaseMs: 30_000,
    })),
  reserveFromQueue: async () => [],
  submitResults: async (_: string, items: readonly unknown[]) =>
    items.map((_item, n) =>
      n === 0
        ? { id: `j.${n}`, status: "retry", retryInMs: 500 }
        : { id: `j.${n}`, status: "conflict", answered: "done" },
    ),
  heartbeat: async (_: string, receipts: readonly string[]) =>
    receipts.map((receipt, n) =>
      n === 0
        ? { id: `j.${n}`, status: "extended", receipt: `${receipt}+`, leaseMs: 30_000 }
        : { id: `j.${n}`, status: "settled" },
    ),
} as unknown as TaskLeases;

const record = {
  id: "j",
  queue: "q",
  status: "running",
  total: 3,
  counts: { done: 1, failed: 0, dead: 0 },
  createdAt: 1,
  updatedAt: 2,
} as JobRecord;

const app = createHttpApp({
  ...limits,
  leases,
  tokens: new BearerTokens({ [WORKER]: "w", [READER]: { identity: "r", role: "read", queues: "*" } }),
  log: silentLogger(),
  // A page with more after it: the answer has a `next`, which the document must describe.
  listJobs: async () => ({ records: [record], next: 7, store: "0a1b2c3d" }),
  getJob: async (id) =>
    id === "j"
      ? { ...record, done: 1, failed: 0, dead: 0, throughput: 2.5, etaMs: null, reason: null }
      : undefined,
  connectionState: () => "connected",
});

const send = async (method: string, path: string, body?: unknown, token: string | null = WORKER) => {
  const response = await app.fetch(
    new Request(`http://x${path}`, {
      method,
      headers: token === null ? {} : { authorization: `Bearer ${token}` },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    }),
  );
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
};

/** The served document, compiled: a validator per component, `$ref`s resolved within it. */
const served = async () => {
  const doc = (await send("GET", "/openapi.json", undefined, null)).json as {
    components: { schemas: Record<string, object> };
  };
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addSchema({ $id: "served", components: doc.components });
  return (name: string) => {
    const validate = ajv.getSchema(`served#/components/schemas/${name}`);
    if (validate === undefined) throw new Error(`the document has no component ${name}`);
    return (value: unknown) => {
      const ok = validate(value) as boolean;
      return { ok, errors: JSON.stringify(validate.errors) };
    };
  };
};

const requests = {
  "/jobs/j/tasks": "ReserveRequest",
  "/queues/q/tasks": "ReserveRequest",
  "/jobs/j/results": "ResultsRequest",
  "/jobs/j/heartbeat": "HeartbeatRequest",
} as const;
const responses = {
  "/jobs/j/tasks": "ReservedTasks",
  "/queues/q/tasks": "ReservedTasks",
  "/jobs/j/results": "ResultsResponse",
  "/jobs/j/heartbeat": "HeartbeatResponse",
} as const;

/** The bodies the HTTP tests send (test/integration/http-api*.test.ts), as they send them. */
const accepted: [keyof typeof requests, unknown][] = [
  ["/jobs/j/tasks", { batch_size: 1 }],
  ["/jobs/j/tasks", { batch_size: 50 }],
  ["/queues/q/tasks", { batch_size: 10 }],
  ["/jobs/j/results", { results: [{ receipt: "r", result: 1 }] }],
  [
    "/jobs/j/results",
    {
      results: [
        { receipt: "r", result: null },
        { receipt: "s", result: { a: [1] } },
      ],
    },
  ],
  ["/jobs/j/results", { results: [{ receipt: "r", error: { message: "GPU busy" } }] }],
  ["/jobs/j/results", { results: [{ receipt: "r", error: { message: "no such image", permanent: true } }] }],
  ["/jobs/j/heartbeat", { receipts: ["r"] }],
  ["/jobs/j/heartbeat", { receipts: ["r", "s"] }],
];

/** Bodies refused with 400 `invalid_request`, and the field the error names. */
const refused: [keyof typeof requests, unknown, string][] = [
  ["/jobs/j/tasks", {}, "batch_size"],
  ["/jobs/j/tasks", [1], "body"],
  ["/jobs/j/tasks", null, "body"],
  ["/jobs/j/tasks", { batch_size: "5" }, "batch_size"],
  ["/jobs/j/tasks", { batch_size: null }, "batch_size"],
  ["/jobs/j/tasks", { batch_size: 0 }, "batch_size"],
  ["/jobs/j/tasks", { batch_size: -3 }, "batch_size"],
  ["/jobs/j/tasks", { batch_size: 1.5 }, "batch_size"],
  ["/jobs/j/tasks", { batch_size: 51 }, "batch_size"],
  ["/jobs/j/tasks", { batch_size: 1e12 }, "batch_size"],
  ["/queues/q/tasks", { batch_size: 10_000 }, "batch_size"],
  ["/jobs/j/tasks", { batch_size: 1, priority: 9 }, "priority"],
  ["/jobs/j/results", {}, "results"],
  ["/jobs/j/results", { results: [] }, "results"],
  ["/jobs/j/results", { results: { receipt: "r", result: 1 } }, "results"],
  [
    "/jobs/j/results",
    { results: Array.from({ length: 11 }, () => ({ receipt: "r", result: 1 })) },
    "results",
  ],
  ["/jobs/j/results", { results: [{ result: 1 }] }, "results[0].receipt"],
  ["/jobs/j/results", { results: [{ receipt: 7, result: 1 }] }, "results[0].receipt"],
  ["/jobs/j/results", { results: [{ receipt: "", result: 1 }] }, "results[0].receipt"],
  ["/jobs/j/results", { results: [{ receipt: "r" }] }, "results[0]"],
  ["/jobs/j/results", { results: [{ receipt: "r", result: 1, error: { message: "x" } }] }, "results[0]"],
  ["/jobs/j/results", { results: [{ receipt: "r", error: "boom" }] }, "results[0].error"],
  ["/jobs/j/results", { results: [{ receipt: "r", error: {} }] }, "results[0].error.message"],
  ["/jobs/j/results", { results: [{ receipt: "r", error: { message: "" } }] }, "results[0].error.message"],
  [
    "/jobs/j/results",
    { results: [{ receipt: "r", error: { message: "x", permanent: "yes" } }] },
    "results[0].error.permanent",
  ],
  [
    "/jobs/j/results",
    { results: [{ receipt: "r", error: { message: "x", stack: "…" } }] },
    "results[0].error.stack",
  ],
  ["/jobs/j/results", { results: [{ receipt: "r", result: 1, extra: 1 }] }, "results[0].extra"],
  ["/jobs/j/heartbeat", {}, "receipts"],
  ["/jobs/j/heartbeat", { receipts: [] }, "receipts"],
  ["/jobs/j/heartbeat", { receipts: "r" }, "receipts"],
  ["/jobs/j/heartbeat", { receipts: [{ receipt: "r" }] }, "receipts[0]"],
  ["/jobs/j/heartbeat", { receipts: [""] }, "receipts[0]"],
  ["/jobs/j/heartbeat", { receipts: ["r".repeat(1025)] }, "receipts[0]"],
];

describe("the served document and the decoder agree on every body", () => {
  let component: Awaited<ReturnType<typeof served>>;
  beforeAll(async () => {
    component = await served();
  });

  it.each(accepted)(
    "POST %s %j: the document and the app accept it; the answer is as documented",
    async (path, body) => {
      expect(component(requests[path])(body)).toMatchObject({ ok: true });
      const answer = await send("POST", path, body);
      expect(answer.status, JSON.stringify(answer.json)).toBe(200);
      const documented = component(responses[path])(answer.json);
      expect(documented.ok, documented.errors).toBe(true);
    },
  );

  it.each(refused)("POST %s %j: the document and the app refuse it (field %s)", async (path, body, field) => {
    expect(component(requests[path])(body).ok, "the document accepts it").toBe(false);
    const answer = await send("POST", path, body);
    expect(answer.status).toBe(400);
    expect(answer.json).toMatchObject({ error: { code: "invalid_request", field } });
    expect((answer.json.error as { message: string }).message.startsWith(`${field}: `)).toBe(true);
    expect(component("Error")(answer.json)).toMatchObject({ ok: true });
  });

  it("the other answers are as documented: health, jobs, a job, errors", async () => {
    const cases: [string, string, string | null, string][] = [
      ["/healthz", "Health", null, "200"],
      ["/jobs", "JobList", READER, "200"],
      ["/jobs?cursor=not-a-cursor", "Error", READER, "400"],
      ["/jobs/j", "Job", READER, "200"],
      ["/jobs/nope", "Error", READER, "404"],
      ["/jobs", "Error", null, "401"],
      ["/jobs", "Error", WORKER, "403"],
    ];
    for (const [path, name, token, status] of cases) {
      const answer = await send("GET", path, undefined, token);
      expect(String(answer.status), path).toBe(status);
      const documented = component(name)(answer.json);
      expect(documented.ok, `${path}: ${documented.errors}`).toBe(true);
    }
  });
});
