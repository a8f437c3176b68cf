/** Starts memory-child.ts in a fresh `node --expose-gc --import tsx` process and reads its JSON line. */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const childFile = fileURLToPath(new URL("./memory-child.ts", import.meta.url));
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

export function runMemoryChild(
  mode: "job-100k" | "idle-jobs" | "live-jobs",
  url: string,
  count: number,
  /** The server's monitoring URL: the child reads its consumer count from `/jsz`. */
  monitorUrl?: string,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--expose-gc", "--import", "tsx", childFile, mode, url, String(count)],
      {
        cwd: repoRoot,
        stdio: ["ignore", "pipe", "pipe"],
        // The parent's profiling flags must not follow the child.
        env: {
          ...process.env,
          NODE_OPTIONS: "",
          ...(monitorUrl ? { JETSTATE_BENCH_MONITOR: monitorUrl } : {}),
        },
      },
    );
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      err += chunk;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 180_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split("\n").pop() ?? "";
      if (code !== 0) return reject(new Error(`memory ${mode}: exit ${code ?? signal}\n${err.slice(-2000)}`));
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`memory ${mode}: no JSON on stdout\n${out.slice(-500)}\n${err.slice(-1000)}`));
      }
    });
  });
}
