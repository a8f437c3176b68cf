/**
 * A long-lived runtime does not keep the jobs it has finished: its heap after
 * 2N finished jobs is about its heap after N (the registry drops a job's actor
 * once its end is recorded; `get` answers a finished job from its record).
 * Measured in a child process with `--expose-gc` (test/fixtures/finished-jobs-heap.ts)
 * so nothing else is in the heap. The bound is far below what a kept job
 * costs (~50 KB: its actor, snapshots, handle and loops) and above what the
 * memory broker's own server stores per job (record, results, answers:
 * about 2 KB, in the same heap).
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

const root = path.resolve(import.meta.dirname, "../..");
const FIXTURE = path.join(root, "test/fixtures/finished-jobs-heap.ts");

interface HeapFigures {
  readonly jobs: number;
  readonly half: number;
  readonly finished: number;
  readonly afterHalf: number;
  readonly afterAll: number;
}

const runFixture = (args: string[]): Promise<HeapFigures> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--expose-gc", "--import", "tsx", FIXTURE, ...args], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NODE_OPTIONS: "" },
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      err += chunk;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`fixture exited ${code}: ${err.slice(-2000)}`));
      resolve(JSON.parse(out.trim().split("\n").pop() ?? "") as HeapFigures);
    });
  });

/** Heap grown per job finished in the second half. */
const perJob = (f: HeapFigures) => (f.afterAll - f.afterHalf) / (f.jobs - f.half);

describe("a runtime's heap against the jobs it has finished", () => {
  let server: NatsServerHandle | undefined;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  it("memory broker: 3,000 finished 1-task jobs, the second 1,500 grow the heap by far less than a kept job each", async () => {
    const figures = await runFixture(["memory", "3000"]);
    console.log(`memory broker: ${Math.round(perJob(figures))} bytes of heap per finished job`, figures);
    expect(figures.finished).toBe(3050);
    // A kept job is ~50 KB; what the in-process server stores for one is ~2 KB.
    expect(perJob(figures)).toBeLessThan(8 * 1024);
  }, 120_000);

  it("NATS: 600 finished 1-task jobs, the second 300 grow the heap by far less than a kept job each", async () => {
    const figures = await runFixture(["nats", "600", server!.url]);
    console.log(`NATS: ${Math.round(perJob(figures))} bytes of heap per finished job`, figures);
    expect(figures.finished).toBe(650);
    expect(perJob(figures)).toBeLessThan(8 * 1024);
  }, 120_000);
});
