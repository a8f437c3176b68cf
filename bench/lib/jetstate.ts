/**
 * The jetstate the bench measures: the package's build (`dist/`), what users
 * install, made first with `npm run build` when a source file is newer than
 * it. The sources through tsx cost more: tsx keeps every function's name as a
 * property of its own (esbuild's `keepNames`), a call per function made, and
 * ~9 KB more heap per job; 1-task jobs ran ~10 % slower that way.
 * `JETSTATE_BENCH_SOURCES=1` measures the sources instead.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type * as Sources from "../../src/index.ts";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** The newest modification time of the files under `dir`. */
const newest = (dir: string): number =>
  Math.max(
    0,
    ...readdirSync(dir, { withFileTypes: true }).map((e) =>
      e.isDirectory() ? newest(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).mtimeMs,
    ),
  );

/** The package's build of the checkout at `root`, when it is newer than every source file; undefined otherwise. */
export const upToDateBuild = (root = repoRoot): string | undefined => {
  const built = path.join(root, "dist", "index.js");
  try {
    return statSync(built).mtimeMs >= newest(path.join(root, "src")) ? built : undefined;
  } catch {
    return undefined;
  }
};

const buildOnce = (): string | undefined => {
  if (process.env.JETSTATE_BENCH_SOURCES === "1") return undefined;
  const built = upToDateBuild();
  if (built) return built;
  process.stderr.write(
    "bench: dist/ is older than src/; building it (npm run build) to measure what users install\n",
  );
  const run = spawnSync("npm", ["run", "--silent", "build"], {
    cwd: repoRoot,
    stdio: ["ignore", "ignore", "inherit"],
  });
  if (run.status !== 0) throw new Error(`bench: npm run build failed (exit ${run.status})`);
  return upToDateBuild();
};

const build = buildOnce();

/** What is measured: `dist` (the build) or `src (tsx)`. */
export const measured = build ? "dist" : "src (tsx)";

// The sources are loaded only when measured: a process holding both copies of the code was
// seen with ~2–3 KiB more heap per live job in the memory section.
const api: typeof Sources = await import(build ? pathToFileURL(build).href : "../../src/index.ts");

export const { createRuntime, createHttpApi } = api;
