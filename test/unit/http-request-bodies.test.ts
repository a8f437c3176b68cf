import { describe, expect, it } from "vitest";
import { HttpError } from "../../src/adapters/http/http-errors.ts";
import {
  parseHeartbeat,
  parseReserve,
  parseResults,
  readJson,
} from "../../src/adapters/http/request-bodies.ts";

const httpError = (fn: () => unknown): HttpError => {
  try {
    fn();
  } catch (error) {
    if (error instanceof HttpError) return error;
    throw error;
  }
  throw new Error("expected an HttpError");
};

const request = (
  body: RequestInit["body"],
  headers: Record<string, string> = { "content-type": "application/json" },
) =>
  new Request("http://x/", {
    method: "POST",
    body,
    headers,
    ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
  } as RequestInit);

describe("readJson", () => {
  it("parses a JSON body", async () => {
    await expect(readJson(request('{"a":1}'), 100)).resolves.toEqual({ a: 1 });
    await expect(readJson(request('{"a":1}', {}), 100)).resolves.toEqual({ a: 1 });
    await expect(
      readJson(request('{"a":1}', { "content-type": "application/x-www-form-urlencoded" }), 100),
    ).resolves.toEqual({
      a: 1,
    });
  });

  it("refuses bodies past the limit, by Content-Length and by the bytes actually read", async () => {
    await expect(readJson(request("x".repeat(101)), 100)).rejects.toMatchObject({
      status: 413,
      code: "body_too_large",
    });
    // A stream without Content-Length that goes on past the limit.
    let sent = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        sent += 64;
        controller.enqueue(new Uint8Array(64).fill(32));
      },
    });
    await expect(readJson(request(endless), 1000)).rejects.toMatchObject({ status: 413 });
    expect(sent).toBeLessThan(2000);
  });

  it("refuses malformed JSON, empty bodies and bad UTF-8", async () => {
    await expect(readJson(request("{"), 100)).rejects.toMatchObject({ status: 400, code: "invalid_json" });
    await expect(readJson(request(""), 100)).rejects.toMatchObject({ status: 400, code: "invalid_json" });
    await expect(readJson(request(new Uint8Array([0x7b, 0xff, 0x7d])), 100)).rejects.toMatchObject({
      status: 400,
    });
  });
});

describe("request bodies", () => {
  it("reserve: batch_size is an integer within 1..max", () => {
    expect(parseReserve({ batch_size: 1 }, 100)).toEqual({ batchSize: 1 });
    expect(parseReserve({ batch_size: 100 }, 100)).toEqual({ batchSize: 100 });
    for (const bad of [
      {},
      { batch_size: 0 },
      { batch_size: -1 },
      { batch_size: 101 },
      { batch_size: 1.5 },
      { batch_size: "5" },
      { batch_size: null },
      { batch_size: 5, x: 1 },
      [],
      null,
      "5",
    ]) {
      const error = httpError(() => parseReserve(bad, 100));
      expect(error.status, JSON.stringify(bad)).toBe(400);
      expect(error.code).toBe("invalid_request");
    }
    expect(httpError(() => parseReserve({ batch_size: "5" }, 100)).details).toEqual({ field: "batch_size" });
  });

  it("results: each item has a receipt and exactly one of result and error", () => {
    expect(
      parseResults(
        {
          results: [
            { receipt: "r", result: { a: 1 } },
            { receipt: "s", result: null },
          ],
        },
        10,
      ),
    ).toEqual([
      { receipt: "r", ok: true, json: '{"a":1}' },
      { receipt: "s", ok: true, json: "null" },
    ]);
    expect(parseResults({ results: [{ receipt: "r", error: { message: "boom" } }] }, 10)).toEqual([
      { receipt: "r", ok: false, message: "boom", permanent: false },
    ]);
    const cases: [unknown, string][] = [
      [{}, "results"],
      [{ results: [] }, "results"],
      [{ results: {} }, "results"],
      [{ results: [{ result: 1 }] }, "results[0].receipt"],
      [{ results: [{ receipt: 5, result: 1 }] }, "results[0].receipt"],
      [{ results: [{ receipt: "r" }] }, "results[0]"],
      [{ results: [{ receipt: "r", result: 1, error: { message: "m" } }] }, "results[0]"],
      [{ results: [{ receipt: "r", error: "boom" }] }, "results[0].error"],
      [{ results: [{ receipt: "r", error: { message: "" } }] }, "results[0].error.message"],
      [
        { results: [{ receipt: "r", error: { message: "m", permanent: "yes" } }] },
        "results[0].error.permanent",
      ],
      [{ results: [{ receipt: "r", error: { message: "m", stack: "…" } }] }, "results[0].error.stack"],
      [{ results: [{ receipt: "r", result: 1, extra: 1 }] }, "results[0].extra"],
      [{ results: Array.from({ length: 11 }, () => ({ receipt: "r", result: 1 })) }, "results"],
    ];
    for (const [body, field] of cases) {
      expect(httpError(() => parseResults(body, 10)).details, JSON.stringify(body)).toEqual({ field });
    }
  });

  it("results: an error message past 8192 characters is kept, truncated with a note", () => {
    const [item] = parseResults(
      { results: [{ receipt: "r", error: { message: "e".repeat(1_000_000) } }] },
      10,
    );
    const message = item?.ok === false ? item.message : "";
    expect(message.length).toBeLessThanOrEqual(8192);
    expect(message).toMatch(/^e{8000,}… \[truncated from 1000000 characters\]$/);
  });

  it("results: a result nested too deeply to store is a 400, not a crash", () => {
    const deep = JSON.parse(`${"[".repeat(200_000)}${"]".repeat(200_000)}`);
    expect(httpError(() => parseResults({ results: [{ receipt: "r", result: deep }] }, 10)).status).toBe(400);
  });

  it("heartbeat: receipts is a non-empty array of strings", () => {
    expect(parseHeartbeat({ receipts: ["a", "b"] }, 10)).toEqual(["a", "b"]);
    for (const bad of [{}, { receipts: [] }, { receipts: "a" }, { receipts: [1] }, { receipts: [""] }]) {
      expect(httpError(() => parseHeartbeat(bad, 10)).status).toBe(400);
    }
  });
});
