/**
 * The dashboard in a real browser: Debian's chromium, headless, driven by
 * playwright-core, with a fresh profile and every request that is not to
 * the loopback dashboard refused (and recorded: the page must need none).
 * A job runs and the page lights `succeeded` with its counts; a job with a
 * dead task is brought back by the page's redrive button. The oracles are
 * the test's handlers' ledger and the job record read raw from the server
 * with the test's own connection. Screenshots go to test/artifacts/.
 */

import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createDashboard, createRuntime, type Runtime } from "../../src/index.ts";
import { type ServedApp, serveOnLoopback } from "../harness/http-server.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const chromiumPath = "/usr/bin/chromium";
const hasChromium = existsSync(chromiumPath);
const artifacts = join(import.meta.dirname, "..", "artifacts");
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");
const TOKEN = "dashboard-browser-operate-0123456789";

describe.skipIf(!hasChromium)(
  hasChromium
    ? "the dashboard in headless chromium"
    : `the dashboard in headless chromium — SKIPPED: no chromium at ${chromiumPath} (apt-get install chromium; .ci/run does)`,
  () => {
    let server: NatsServerHandle;
    let rt: Runtime;
    let nc: NatsConnection;
    let http: ServedApp;
    let profile: string;
    let context: BrowserContext;
    let page: Page;
    /** Requests the page made anywhere but the dashboard: refused, and must stay empty. */
    const foreign: string[] = [];
    const pageErrors: string[] = [];

    const storedRecord = async (id: string) => {
      const jsm = await jetstreamManager(nc);
      const m = await jsm.streams.getMessage(`KV_${names.jobsBucket}`, {
        last_by_subj: `$KV.${names.jobsBucket}.${id}`,
      });
      return m
        ? (JSON.parse(m.string()) as { status: string; counts: { done: number; dead: number } })
        : undefined;
    };
    const lit = (state: string) => page.locator(`#job-chart rect[data-state="${state}"]`);
    const waitLit = (state: string, timeout = 10_000) =>
      page.waitForSelector(`#job-chart rect[data-state="${state}"][data-active="true"]`, { timeout });
    const shot = (name: string) =>
      page.screenshot({ path: join(artifacts, `dashboard-${name}.png`), fullPage: true });

    beforeAll(async () => {
      mkdirSync(artifacts, { recursive: true });
      server = await startNatsServer();
      rt = await createRuntime({ servers: server.url, logger, name: "dash" });
      nc = await connect({ servers: server.url, name: "oracle" });
      http = await serveOnLoopback(
        createDashboard(rt, { tokens: { [TOKEN]: { identity: "ops", role: "operate", queues: "*" } } }).fetch,
      );
      profile = mkdtempSync(join(tmpdir(), "jetstate-chromium-"));
      context = await chromium.launchPersistentContext(profile, {
        executablePath: chromiumPath,
        headless: true,
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
        viewport: { width: 1400, height: 1100 },
      });
      await context.route("**/*", (route) => {
        const url = route.request().url();
        if (url.startsWith(`${http.baseUrl}/`)) return route.continue();
        foreign.push(url);
        return route.abort();
      });
      page = context.pages()[0] ?? (await context.newPage());
      page.on("pageerror", (error) => pageErrors.push(error.message));
      await page.goto(`${http.baseUrl}/#token=${TOKEN}`);
      await page.waitForSelector("#who:has-text('ops (operate)')", { timeout: 10_000 });
    }, 25_000);
    afterAll(async () => {
      await context?.close();
      if (profile) rmSync(profile, { recursive: true, force: true });
      await http?.close();
      await nc?.close();
      await rt?.stop();
      await server?.dispose();
    });

    it("shows a job run to succeeded: the lit state in its chart and its counts", async () => {
      let open: () => void = () => {};
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      const handled: number[] = [];
      const worker = rt.workers.start<{ n: number }, number>({
        queue: "browser_ok",
        concurrency: 4,
        handler: async (task) => {
          await gate;
          handled.push(task.index);
          return task.payload.n;
        },
      });
      const job = await rt.jobs.submit({ queue: "browser_ok", tasks: [0, 1, 2, 3].map((n) => ({ n })) });
      await page.click(`#jobs tr[data-job="${job.id}"]`, { timeout: 10_000 });
      await waitLit("job.running");
      expect(await page.textContent("#job-status")).toBe("running");
      // The test's worker, as presence lists it (the overview is read again every 3 s).
      await page.waitForSelector("#workers td:text-is('browser_ok')", { timeout: 8000 });
      await shot("running");

      open();
      await waitLit("job.succeeded");
      await waitLit("job.succeeded.recorded");
      await page.waitForSelector("#job-done:text-is('4')", { timeout: 5000 });
      await shot("succeeded");
      await worker.stop();

      expect(await lit("job.running").getAttribute("data-active")).toBe("false");
      expect(await page.textContent("#job-status")).toBe("succeeded");
      expect(handled.slice().sort()).toEqual([0, 1, 2, 3]);
      expect(await storedRecord(job.id)).toMatchObject({ status: "succeeded", counts: { done: 4 } });
      // The transition that ended it (finalize done: recording → recorded) is drawn as taken.
      const fired = page.locator('#job-chart path[data-fired="true"]');
      expect(await fired.count()).toBe(1);
      expect([await fired.getAttribute("data-source"), await fired.getAttribute("data-target")]).toEqual([
        "job.succeeded.recording",
        "job.succeeded.recorded",
      ]);
      expect(foreign).toEqual([]);
      expect(pageErrors).toEqual([]);
    }, 25_000);

    it("cancels a running job with the cancel button", async () => {
      let open: () => void = () => {};
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      const worker = rt.workers.start<{ n: number }, number>({
        queue: "browser_cancel",
        concurrency: 2,
        handler: async (task) => {
          await gate;
          return task.payload.n;
        },
      });
      const job = await rt.jobs.submit({ queue: "browser_cancel", tasks: [0, 1].map((n) => ({ n })) });
      await page.click(`#jobs tr[data-job="${job.id}"]`, { timeout: 10_000 });
      await waitLit("job.running");
      await page.click("#cancel");
      await waitLit("job.failed");
      await shot("cancelled");
      // The cancel reaches the actor as the record's end: the one edge drawn as taken is that one.
      const fired = page.locator('#job-chart path[data-fired="true"]');
      expect(await fired.count()).toBe(1);
      expect([await fired.getAttribute("data-source"), await fired.getAttribute("data-target")]).toEqual([
        "job",
        "job.failed.recorded",
      ]);
      open();
      await worker.stop();
      expect(await storedRecord(job.id)).toMatchObject({
        status: "failed",
        reason: "cancelled: cancelled from the dashboard (by ops)",
      });
      expect(await page.textContent("#job-reason")).toBe("cancelled: cancelled from the dashboard (by ops)");
      expect(pageErrors).toEqual([]);
    }, 25_000);

    it("brings a dead task back with the redrive button", async () => {
      let upstreamDown = true;
      /** The ledger: each run of task 1, with whether the upstream was down then. */
      const runsOfOne: { attempt: number; down: boolean }[] = [];
      const worker = rt.workers.start<{ n: number }, number>({
        queue: "browser_dead",
        concurrency: 4,
        handler: (task) => {
          if (task.index === 1) {
            runsOfOne.push({ attempt: task.attempt, down: upstreamDown });
            if (upstreamDown) throw new Error("upstream busy");
          }
          return task.payload.n;
        },
      });
      const job = await rt.jobs.submit({
        queue: "browser_dead",
        tasks: [0, 1, 2].map((n) => ({ n })),
        maxDeliver: 2,
        backoff: [20],
      });
      await page.click(`#jobs tr[data-job="${job.id}"]`, { timeout: 10_000 });
      await waitLit("job.failed");
      await page.waitForSelector('#dead-letters tr[data-task="1"]', { timeout: 10_000 });
      expect(await storedRecord(job.id)).toMatchObject({ status: "failed", counts: { dead: 1 } });
      expect(runsOfOne).toEqual([
        { attempt: 1, down: true },
        { attempt: 2, down: true },
      ]);
      await shot("dead");

      upstreamDown = false;
      await page.click("#redrive");
      await waitLit("job.succeeded.recorded");
      await page.waitForSelector("#job-dead:text-is('0')", { timeout: 5000 });
      await page.waitForSelector("#job-done:text-is('3')", { timeout: 5000 });
      await shot("redriven");
      await worker.stop();

      expect(runsOfOne.at(-1)).toEqual({ attempt: 1, down: false });
      await waitUntil(async () => (await storedRecord(job.id))?.status === "succeeded", {
        timeoutMs: 5000,
        message: "the record says succeeded",
      });
      expect(await storedRecord(job.id)).toMatchObject({ status: "succeeded", counts: { done: 3, dead: 0 } });
      expect(await page.locator("#dead-letters tbody tr").count()).toBe(0);
      expect(foreign).toEqual([]);
      expect(pageErrors).toEqual([]);
    }, 25_000);
  },
);
