import { describe, expect, it } from "vitest";
import { BearerTokens } from "../../src/adapters/http/bearer-tokens.ts";
import { createHttpApp } from "../../src/adapters/http/http-app.ts";
import { openApiDocument } from "../../src/adapters/http/openapi.ts";
import type { TaskLeases } from "../../src/adapters/http/task-leases.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

const limits = { maxBatchSize: 50, maxResults: 1000, maxBodyBytes: 4096 };

const app = createHttpApp({
  ...limits,
  leases: {} as TaskLeases,
  tokens: new BearerTokens({ "a-token-of-16-chars": "w" }),
  log: silentLogger(),
  listJobs: async () => ({ records: [], store: "0a1b2c3d" }),
  getJob: async () => undefined,
  connectionState: () => "connected",
});

/** Every `$ref` in the document, wherever it is. */
const refs = (value: unknown): string[] =>
  typeof value !== "object" || value === null
    ? []
    : Object.entries(value).flatMap(([k, v]) => (k === "$ref" && typeof v === "string" ? [v] : refs(v)));

describe("OpenAPI document", () => {
  const doc = openApiDocument(limits);

  it("documents exactly the routes the app serves", () => {
    const served = app.routes
      .filter((r) => r.method === "GET" || r.method === "POST")
      .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, "{$1}")}`)
      .sort();
    const documented = Object.entries(doc.paths)
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    expect(documented).toEqual(served);
  });

  it("is OpenAPI 3.1 with every reference defined and the configured bounds", () => {
    expect(doc.openapi).toBe("3.1.0");
    for (const ref of refs(doc)) {
      const name = ref.replace("#/components/schemas/", "");
      expect(doc.components.schemas, ref).toHaveProperty(name);
    }
    expect(doc.components.schemas).toMatchObject({
      ReserveRequest: { properties: { batch_size: { maximum: 50 } } },
      ResultsRequest: { properties: { results: { maxItems: 1000 } } },
      HeartbeatRequest: { properties: { receipts: { maxItems: 1000 } } },
    });
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
  });

  it("is served at /openapi.json without a token", async () => {
    const response = await app.fetch(new Request("http://x/openapi.json"));
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual(doc);
  });

  it("documents the refusals of scopes, the lease cap and answered deliveries", () => {
    const responses = (path: string, method: string) => {
      const operation = (doc.paths as Record<string, Record<string, { responses: object }>>)[path]?.[method];
      if (operation === undefined) throw new Error(`${method} ${path} is not documented`);
      return Object.keys(operation.responses);
    };
    for (const [path, method] of [
      ["/jobs", "get"],
      ["/jobs/{id}", "get"],
      ["/jobs/{id}/tasks", "post"],
      ["/queues/{queue}/tasks", "post"],
      ["/jobs/{id}/results", "post"],
      ["/jobs/{id}/heartbeat", "post"],
    ] as const) {
      expect(responses(path, method), `${method} ${path}`).toContain("403");
    }
    expect(responses("/jobs/{id}/tasks", "post")).toContain("429");
    expect(responses("/queues/{queue}/tasks", "post")).toContain("429");
    expect(responses("/jobs/{id}/results", "post")).toContain("409");
    expect(responses("/jobs/{id}/tasks", "post")).toContain("409");
  });
});
