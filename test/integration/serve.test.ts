/**
 * `npm run serve` (examples/serve.ts) says what it reads: `--help` lists every
 * variable, a missing JETSTATE_TOKENS is named before anything starts, and a
 * started server prints a header with the values it uses (secrets only as
 * set / not set) before it listens. Run as a real process; the server it
 * starts is checked over real HTTP, against a nats-server of this test's own.
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { closedAddress } from "../harness/nats-process.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const root = path.resolve(import.meta.dirname, "../..");
const SERVE = path.join(root, "examples/serve.ts");
const BOUND_MS = 30_000;
const VARIABLES = ["NATS_URL", "HOST", "PORT", "JETSTATE_TOKENS", "JETSTATE_RECEIPT_SECRET"];

interface Run {
  readonly child: ChildProcess;
  readonly output: () => string;
  readonly exited: Promise<number | null>;
}

const run = (args: string[], env: Record<string, string>): Run => {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !VARIABLES.includes(k) && k !== "NODE_ENV"),
  );
  const child = spawn(process.execPath, ["--import", "tsx", SERVE, ...args], {
    cwd: root,
    env: { ...clean, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve(null);
    }, BOUND_MS);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
  return { child, output: () => output, exited };
};

describe("npm run serve", () => {
  it("--help lists every variable it reads and exits", async () => {
    const closed = await closedAddress();
    onTestFinished(closed.release);
    const r = run(["--help"], { NATS_URL: `nats://${closed.host}:${closed.port}` });
    expect(await r.exited, r.output()).toBe(0);
    for (const name of VARIABLES) expect(r.output()).toContain(name);
  });

  it("without JETSTATE_TOKENS it says so and exits 1", async () => {
    const closed = await closedAddress();
    onTestFinished(closed.release);
    const r = run([], { NATS_URL: `nats://${closed.host}:${closed.port}` });
    expect(await r.exited, r.output()).toBe(1);
    expect(r.output()).toMatch(/JETSTATE_TOKENS.*(missing|not set|required)/i);
    expect(r.output()).toContain("--help");
  });

  it("a token an Authorization header cannot carry (under 16 characters) is named before anything connects, exit 1", async () => {
    const closed = await closedAddress();
    onTestFinished(closed.release);
    const r = run([], { NATS_URL: `nats://${closed.host}:${closed.port}`, JETSTATE_TOKENS: "short=box-7" });
    expect(await r.exited, r.output()).toBe(1);
    expect(r.output()).toMatch(/JETSTATE_TOKENS: token #1 .*16–1024 visible ASCII/);
    expect(r.output()).not.toContain("short");
    // "Everything is checked before the runtime connects anywhere" (examples/serve.ts).
    expect(r.output()).not.toMatch(/connecting/);
  });

  describe("started", () => {
    let nats: NatsServerHandle;
    beforeAll(async () => {
      nats = await startNatsServer();
    });
    afterAll(async () => {
      await nats?.dispose();
    });

    it("prints the values it uses, listens, and stops on SIGTERM", async () => {
      const token = "s3cret-token-of-the-test";
      const r = run([], {
        NATS_URL: nats.url,
        HOST: "127.0.0.1",
        PORT: "0",
        JETSTATE_TOKENS: `${token}=box-7`,
      });
      let url = "";
      await waitUntil(
        () => {
          const match = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(r.output());
          url = match?.[1] ?? "";
          return url !== "";
        },
        { timeoutMs: BOUND_MS, message: "serve printed the URL it listens on" },
      );
      const header = r.output();
      expect(header).toContain(nats.url);
      expect(header).toMatch(/JETSTATE_TOKENS\s+1 token\b.*box-7/);
      expect(header).toMatch(/JETSTATE_RECEIPT_SECRET\s+not set/);
      expect(header).not.toContain(token);
      // Its listener may come up before its NATS connection does (CI: 503 with the connection
      // "connecting"): healthy once connected, within the bound; the body names the state.
      let health = "";
      await waitUntil(
        async () => {
          const res = await fetch(`${url}/healthz`);
          health = `${res.status} ${await res.text()}`;
          return res.status === 200;
        },
        { timeoutMs: BOUND_MS, message: "serve healthy" },
      ).catch(() => undefined);
      expect(health, r.output()).toMatch(/^200 /);
      r.child.kill("SIGTERM");
      expect(await r.exited, r.output()).toBe(0);
    });
  });
});
