/**
 * The tarball `npm publish` would upload, for the package tests: dist/ built
 * from the current sources (`npm test` builds first; alone, this builds when
 * stale), then `npm pack` (without its prepack build: dist/ is current).
 */
import { execFile } from "node:child_process";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
export const repo = path.resolve(import.meta.dirname, "../..");

/** The newest modification time under `dir` (recursively). */
const newest = async (dir: string): Promise<number> => {
  let latest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    latest = Math.max(latest, entry.isDirectory() ? await newest(full) : (await stat(full)).mtimeMs);
  }
  return latest;
};

const ensureBuilt = async () => {
  // The library's entry and the bin's: a build from before the bin existed is stale too.
  const mtimes = await Promise.all(
    ["dist/index.js", "dist/cli.js"].map((file) =>
      stat(path.join(repo, file)).then(
        (s) => s.mtimeMs,
        () => 0,
      ),
    ),
  );
  const built = Math.min(...mtimes);
  const sources = Math.max(
    await newest(path.join(repo, "src")),
    (await stat(path.join(repo, "package.json"))).mtimeMs,
  );
  if (built < sources)
    await run(process.execPath, [path.join(repo, "node_modules/tsup/dist/cli-default.js")], { cwd: repo });
};

/** Packs the package into `destination`; resolves with the tarball's path. */
export const packTarball = async (destination: string): Promise<string> => {
  await ensureBuilt();
  const { stdout } = await run("npm", ["pack", "--ignore-scripts", "--pack-destination", destination], {
    cwd: repo,
  });
  return path.join(destination, stdout.trim().split("\n").pop()!);
};
