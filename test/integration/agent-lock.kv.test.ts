/**
 * The agent lock across processes (issue #6): the same protocol on a KV
 * record with compare-and-set, against a real nats-server. Child processes
 * (test/fixtures/agent-burst.ts) are real OS processes with their own
 * connection, registry and lock actor; nothing but the KV record is shared.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import type { KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { kvAgentStore, openAgentBucket } from "../../src/adapters/nats/kv-agent-store.ts";
import { createAgentRegistry } from "../../src/api/agents.ts";
import { initialAgentRecord } from "../../src/kernel/agent-record.ts";
import { InvalidArgument, RevisionConflict } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const root = path.resolve(import.meta.dirname, "../..");
const FIXTURE = path.join(root, "test/fixtures/agent-burst.ts");
const CHILD_DEADLINE_MS = 30_000;

interface Child {
  readonly process: ChildProcessWithoutNullStreams;
  readonly lines: string[];
  readonly exited: Promise<number | null>;
  waitForLine(match: (line: string) => boolean, what: string): Promise<string>;
}

const children: Child[] = [];

const startChild = (args: string[]): Child => {
  // `node --import tsx`, not the tsx CLI: the CLI runs the script in a second node process, so a
  // SIGKILL to the CLI would orphan the script instead of killing it mid-switch.
  const child = spawn(process.execPath, ["--import", "tsx", FIXTURE, ...args], {
    cwd: root,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let stderr = "";
  let exitCode: number | null | undefined;
  createInterface({ input: child.stdout }).on("line", (line) => lines.push(line));
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      exitCode = code;
      resolve(code);
    }),
  );
  const handle: Child = {
    process: child,
    lines,
    exited,
    waitForLine: async (match, what) => {
      await waitUntil(
        () => {
          if (lines.some(match)) return true;
          // A child that died cannot print it any more: say why instead of timing out.
          if (exitCode !== undefined) throw new Error(`child ${child.pid} exited ${exitCode}: ${stderr}`);
          return false;
        },
        { timeoutMs: CHILD_DEADLINE_MS, message: `child ${child.pid}: ${what}` },
      );
      return lines.find(match)!;
    },
  };
  children.push(handle);
  return handle;
};

describe("agent lock across processes on NATS KV", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let kv: KV;

  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, name: "agent-lock-test" });
    kv = await openAgentBucket(nc);
  });
  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill("SIGKILL");
      await child.exited;
    }
  });
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
  });

  it("three processes reporting bursts for one agent record exactly one switch", async () => {
    const agentId = "detector-burst";
    const burst = 40;
    const procs = [1, 2, 3].map(() => startChild([server.url, agentId, String(burst), "burst", "3"]));
    await Promise.all(procs.map((p) => p.waitForLine((l) => l === "ready", "registered")));
    // Released together, so the three locks really race on the same record.
    for (const p of procs) p.process.stdin.write("go\n");
    const results = await Promise.all(
      procs.map(async (p) => JSON.parse(await p.waitForLine((l) => l.startsWith("{"), "burst result"))),
    );
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual([0, 0, 0]);

    const sum = (key: string) => results.reduce((total, r) => total + r[key], 0);
    expect(sum("switched")).toBe(1);
    expect(sum("switchesSeen")).toBe(1);
    expect(sum("stale")).toBe(3 * burst - 1);
    expect(sum("exhausted")).toBe(0);
    // All three read the record on A before any wrote (the fixture's barrier): two lost the CAS,
    // re-read, and found their failure stale.
    expect(sum("conflicts")).toBe(2);
    const stored = await kvAgentStore(kv).read(agentId);
    expect(stored?.record).toMatchObject({
      v: 1,
      current: "B",
      switches: 1,
      lastSwitch: { from: "A", to: "B" },
    });
    expect(stored?.record.skips.map((s) => s.target)).toEqual(["A"]);
  });

  it("a process killed mid-switch leaves no lock behind: another process switches at once", async () => {
    const agentId = "detector-crash";
    const dying = startChild([server.url, agentId, "5", "hang"]);
    await dying.waitForLine((l) => l === "ready", "registered");
    dying.process.stdin.write("go\n");
    await dying.waitForLine((l) => l === "mid-switch", "stuck in its CAS write");
    dying.process.kill("SIGKILL");
    await dying.exited;
    // Its connection is gone too: only this test's client is left on the server.
    await waitUntil(async () => (await server.connectionCount()) === 1, {
      timeoutMs: 10_000,
      message: "the killed process's connection to close",
    });

    const registry = createAgentRegistry({ logger: silentLogger(), store: kvAgentStore(kv) });
    await registry.register({ agentId, targets: ["A", "B", "C"], current: "A" });
    await expect(registry.reportFailure(agentId, { target: "A" })).resolves.toEqual({
      outcome: "switched",
      from: "A",
      to: "B",
    });
    expect((await kvAgentStore(kv).read(agentId))?.record).toMatchObject({ current: "B", switches: 1 });
    await registry.stop();
  });

  it("maps CAS losses to RevisionConflict and refuses keys KV cannot hold", async () => {
    const store = kvAgentStore(kv);
    const revision = await store.create("cas-probe", initialAgentRecord("A"));
    await expect(store.create("cas-probe", initialAgentRecord("B"))).rejects.toBeInstanceOf(RevisionConflict);
    const next = await store.update("cas-probe", { ...initialAgentRecord("B"), switches: 1 }, revision);
    await expect(store.update("cas-probe", initialAgentRecord("C"), revision)).rejects.toBeInstanceOf(
      RevisionConflict,
    );
    expect(await store.read("cas-probe")).toEqual({
      record: { ...initialAgentRecord("B"), switches: 1 },
      revision: next,
    });
    expect(await store.read("never-written")).toBeUndefined();
    await expect(store.read("has space")).rejects.toBeInstanceOf(InvalidArgument);
  });
});
