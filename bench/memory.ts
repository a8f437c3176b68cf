/** Starts memory-child.ts in a fresh `node --expose-gc --import tsx` process and reads its JSON line. */
import { spawn } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const childFile = fileURLToPath(new URL("./memory-child.ts", import.meta.url));
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

/** The newest modification time of the files under `dir`. */
const newest = (dir: string): number =>
  Math.max(
    0,
    ...readdirSync(dir, { withFileTypes: true }).map((e) =>
      e.isDirectory() ? newest(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).mtimeMs,
    ),
  );

/**
 * The package's build, when it is newer than every source file: what users
 * run (`npm run build` makes it). Undefined otherwise: the child measures
 * the sources through tsx, which adds a named property to every function.
 */
export const upToDateBuild = (): string | undefined => {
  const built = path.join(repoRoot, "dist", "index.js");
  try {
    return statSync(built).mtimeMs >= newest(path.join(repoRoot, "src")) ? built : undefined;
  } catch {
    return undefined;
  }
};

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
          ...(upToDateBuild() ? { JETSTATE_BENCH_BUILD: upToDateBuild() } : {}),
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
