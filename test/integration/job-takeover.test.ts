/**
 * Supervision takeover across processes (issue #5). Two runtimes in two
 * child processes (test/fixtures/job-supervisor.ts): A submits a job and
 * supervises it, B watches for orphans. Workers run here, on a runtime made
 * with `jobs.takeOver: false`, so the only runtime that may take over is B.
 * A is killed with SIGKILL mid-job; B must take the job over once A's lease
 * has run out (never before: the lease history in KV is checked), and finish
 * it with every task counted exactly once.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import type { Worker } from "../../src/api/workers.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults, tally } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

const root = path.resolve(import.meta.dirname, "../..");
const FIXTURE = path.join(root, "test/fixtures/job-supervisor.ts");
const CHILD_DEADLINE_MS = 30_000;
const leaseMs = 1000;
const total = 400;
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

type Line = Record<string, unknown>;

interface Child {
  readonly process: ChildProcessWithoutNullStreams;
  readonly pid: number;
  readonly exited: Promise<void>;
  /** Processes the child started (esbuild's service under tsx): they must go with it. */
  readonly descendants: Set<number>;
  waitFor(match: (line: Line) => boolean, what: string): Promise<Line>;
}

const children: Child[] = [];

/** Child processes of `pid`, and theirs, from /proc. */
const descendantsOf = (pid: number): number[] => {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const found: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        found.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return found;
};

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const startChild = (args: string[]): Child => {
  // `node --import tsx`, not the tsx CLI: the CLI runs the script in a second node process,
  // which a SIGKILL to the CLI would orphan instead of killing.
  const child = spawn(process.execPath, ["--import", "tsx", FIXTURE, ...args], {
    cwd: root,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const lines: Line[] = [];
  let stderr = "";
  let exit: string | undefined;
  createInterface({ input: child.stdout }).on("line", (text) => {
    try {
      lines.push(JSON.parse(text) as Line);
    } catch {
      lines.push({ text });
    }
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<void>((resolve) =>
    child.on("exit", (code, signal) => {
      exit = `code ${code} signal ${signal}`;
      resolve();
    }),
  );
  const handle: Child = {
    process: child,
    pid: child.pid!,
    exited,
    descendants: new Set(),
    waitFor: async (match, what) => {
      await waitUntil(
        () => {
          for (const d of descendantsOf(handle.pid)) handle.descendants.add(d);
          if (lines.some(match)) return true;
          // A child that died cannot print it any more: say why instead of timing out.
          if (exit !== undefined) throw new Error(`child ${child.pid} exited (${exit}): ${stderr}`);
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

const killAndWait = async (child: Child, signal: NodeJS.Signals) => {
  if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill(signal);
  await child.exited;
};

interface LeaseWrite {
  readonly op: string;
  readonly holder?: string;
  readonly until?: number;
  /** Server time of the write. */
  readonly at: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe("takeover of a job whose supervising process was killed", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let worker: Worker;
  let nc: NatsConnection;
  const handled = new Map<string, number[]>();
  const leaseWrites = new Map<string, LeaseWrite[]>();
  const takeoverMs: number[] = [];
  const endMs: number[] = [];

  beforeAll(async () => {
    server = await startNatsServer();
    // Every lease write, from the first: the bucket is made here as the runtimes make it.
    nc = await connect({ servers: server.url, name: "takeover-test" });
    const kv = await new Kvm(nc).create("jetstate_leases", { history: 1, storage: StorageType.File });
    const watch = await kv.watch();
    void (async () => {
      for await (const e of watch) {
        const lease = e.operation === "PUT" ? e.json<{ holder: string; until: number }>() : undefined;
        const writes = leaseWrites.get(e.key) ?? [];
        writes.push({ op: e.operation, ...lease, at: e.created.getTime() });
        leaseWrites.set(e.key, writes);
      }
    })();
    rt = await createRuntime({
      servers: server.url,
      name: "workers",
      logger,
      jobs: { takeOver: false, leaseMs },
    });
    // Steady: 2 in flight × 20 ms ≈ 100 tasks/s, so the 400-task job lasts ~4 s.
    worker = rt.workers.start<number, number>({
      queue: "takeover",
      concurrency: 2,
      handler: async (task) => {
        const seen = handled.get(task.jobId) ?? [];
        seen.push(task.index);
        handled.set(task.jobId, seen);
        await new Promise((r) => setTimeout(r, 20));
        return task.payload * 3;
      },
    });
  });

  afterAll(async () => {
    for (const child of children) await killAndWait(child, "SIGKILL");
    await worker?.stop();
    await rt?.stop();
    await nc?.close();
    await server?.dispose();
    if (takeoverMs.length > 0) {
      console.log(
        `takeover after SIGKILL: ${takeoverMs.join(", ")} ms (median ${median(takeoverMs)}); ` +
          `job end after SIGKILL: ${endMs.join(", ")} ms (median ${median(endMs)})`,
      );
    }
    // Nothing is left running: the children, and whatever they started.
    const all = children.flatMap((c) => [c.pid, ...c.descendants]);
    await waitUntil(() => all.every((pid) => !alive(pid)), {
      timeoutMs: 5000,
      message: `child processes gone (${all.filter(alive).join(", ")})`,
    });
  });

  it.each([1, 2, 3])(
    "run %i: B takes over after A's lease ran out and finishes the job, every task counted once",
    async (run) => {
      const b = startChild([server.url, `child-B${run}`, "watch", String(leaseMs)]);
      await b.waitFor((l) => l.event === "ready", "ready");
      const earlier = new Set(handled.keys());
      const a = startChild([server.url, `child-A${run}`, "submit", String(total), String(leaseMs)]);
      const jobId = String((await a.waitFor((l) => l.event === "submitted", "submitted")).jobId);
      expect(earlier.has(jobId)).toBe(false);

      // Watched from the workers' runtime too: a runtime with takeOver off must never take it.
      const watched = (await rt.jobs.get<number>(jobId))!;
      // Counted where the work is done (not by a watcher, which may read results late).
      const handledNow = () => new Set(handled.get(jobId)).size;
      await waitUntil(() => handledNow() >= total / 4, {
        timeoutMs: 30_000,
        message: "a quarter of the job done",
      });
      const killedAt = Date.now();
      a.process.kill("SIGKILL");
      await a.exited;
      const doneAtKill = handledNow();
      const watcherAtKill = watched.snapshot().done;
      expect(doneAtKill).toBeLessThan(total);

      const took = await b.waitFor(
        (l) => l.jobId === jobId && String(l.msg).startsWith("taking over a job"),
        "taking over the job",
      );
      const tookAt = Number(took.time);
      const final = await watched.done();
      expect(final).toMatchObject({ status: "succeeded", total, done: total, failed: 0, dead: 0 });
      const record = (await rt.jobs.list()).jobs.find((r) => r.id === jobId);
      expect(record).toMatchObject({ status: "succeeded", counts: { done: total, failed: 0, dead: 0 } });

      // Every index counted once, against witnesses that do not de-duplicate (results() does, by
      // index): the results stream as the server stores it, read by this test's own consumer...
      const all = Array.from({ length: total }, (_, n) => n);
      const stored = new Set((await natsRawResults(nc, final.queue, jobId)).map((e) => e.i));
      expect([...stored].sort((a, b) => a - b)).toEqual(all);
      expect(final.done + final.failed + final.dead).toBe(stored.size);
      // ...and the workers' ledger: the kill is of the supervisor, not of a worker, so no task is
      // handed out again: each ran exactly once.
      const runs = tally(handled.get(jobId) ?? []);
      expect([...runs.keys()].sort((a, b) => a - b)).toEqual(all);
      expect([...runs].filter(([, n]) => n !== 1)).toEqual([]);
      // Each answer is its worker's (results() is fine for values: one per index).
      for await (const r of watched.results()) expect(r.ok && r.result).toBe(r.index * 3);

      // The lease went from A to B once, and only after A's last `until`: never two holders.
      await waitUntil(() => (leaseWrites.get(jobId) ?? []).some((w) => w.op !== "PUT"), {
        timeoutMs: 5000,
        message: "B released the lease at the end",
      });
      const puts = leaseWrites.get(jobId)!.filter((w) => w.op === "PUT");
      const holders = puts.map((w) => w.holder!.split(".")[0]);
      const firstB = holders.indexOf(`child-B${run}`);
      expect(firstB).toBeGreaterThan(0);
      expect(holders.slice(0, firstB).every((h) => h === `child-A${run}`)).toBe(true);
      expect(holders.slice(firstB).every((h) => h === `child-B${run}`)).toBe(true);
      const lastA = puts[firstB - 1]!;
      expect(puts[firstB]!.at).toBeGreaterThanOrEqual(lastA.until!);
      expect(tookAt).toBeGreaterThanOrEqual(lastA.until!);
      // A renewed until it died, so its lease ran out within leaseMs of the kill.
      expect(lastA.until! - killedAt).toBeLessThanOrEqual(leaseMs);

      takeoverMs.push(tookAt - killedAt);
      endMs.push(record!.finishedAt! - killedAt);
      console.log(
        `run ${run}: killed A at ${doneAtKill}/${total} handled (${watcherAtKill} counted by a watcher); ` +
          `B took over after ${tookAt - killedAt} ms ` +
          `(A's lease ran out ${lastA.until! - killedAt} ms after the kill); job ended after ` +
          `${record!.finishedAt! - killedAt} ms`,
      );
      await killAndWait(b, "SIGTERM");
    },
    90_000,
  );
});
