/**
 * examples/remote-worker.ts while idle: every empty poll pauses on the caller's
 * signal. A long-lived signal must not collect one abort listener per pause
 * (Node warns past 10, and they never go). The API here is a stub on loopback
 * that has no tasks and counts the polls: the ledger of how many pauses ran.
 */
import { getEventListeners } from "node:events";
import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runRemoteWorker } from "../../examples/remote-worker.ts";
import { waitUntil } from "../harness/wait.ts";

describe("remote worker, idle", () => {
  let server: Server;
  let baseUrl = "";
  let polls = 0;

  beforeAll(async () => {
    server = createServer((request, response) => {
      if (request.method === "POST" && request.url === "/queues/idle/tasks") polls++;
      request.resume();
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ tasks: [] }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it("leaves at most one abort listener on its signal after many empty polls", async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    const controller = new AbortController();
    try {
      const running = runRemoteWorker<number, number>({
        baseUrl,
        token: "t".repeat(16),
        queue: "idle",
        handler: (n) => n,
        maxIdleMs: 1,
        signal: controller.signal,
      });
      await waitUntil(() => polls >= 60, { timeoutMs: 20_000, message: "60 empty polls" });
      const listeners = getEventListeners(controller.signal, "abort").length;
      controller.abort();
      expect(await running).toEqual({ processed: 0, failed: 0, dropped: 0 });
      expect(listeners, `abort listeners after ${polls} polls`).toBeLessThanOrEqual(1);
      expect(warnings.filter((w) => w.name === "MaxListenersExceededWarning")).toEqual([]);
    } finally {
      process.off("warning", onWarning);
    }
  });
});
