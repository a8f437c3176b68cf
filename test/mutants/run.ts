/**
 * Mutation check for issue #13's "done when": each change in mutations.ts
 * must make at least one of its tests fail within 60 s.
 *
 *   npx tsx test/mutants/run.ts            all mutations
 *   npx tsx test/mutants/run.ts a,d-nats   only these
 *   npx tsx test/mutants/run.ts --match    only whether each still matches the source (`npm run check`)
 *
 * Works on a copy of the repository in a temporary directory (node_modules
 * linked, never installed), so the working tree is never modified. The
 * unmutated tests run first: a mutation can only be "killed" by tests that
 * pass without it. Prints killed / survived per mutation; exits 1 if one
 * survived, 2 if a mutation no longer matches the source (update its entry).
 */
import { spawn } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Mutation, mutations } from "./mutations.ts";

const TIMEOUT_MS = 60_000;
const root = path.resolve(import.meta.dirname, "../..");
const copied = ["src", "test", "package.json", "tsconfig.json", "vitest.config.ts"];

const occurrences = (text: string, search: string) => text.split(search).length - 1;

/** The mutated text of the file, or why the entry no longer fits the source. */
const mutate = (m: Mutation, original: string): string | { stale: string } => {
  const n = occurrences(original, m.search);
  if (n === 0) return { stale: `search string not found in ${m.file}` };
  if (n > 1 && !m.all) return { stale: `search string found ${n} times in ${m.file} (expected once)` };
  return original.split(m.search).join(m.replace);
};

interface Run {
  readonly code: number | null;
  readonly timedOut: boolean;
  readonly ms: number;
  readonly output: string;
}

/** Runs vitest on `files` in `dir`, killing its process group after the timeout. */
const vitest = (dir: string, files: readonly string[]): Promise<Run> =>
  new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(path.join(dir, "node_modules/.bin/vitest"), ["run", "--bail=1", ...files], {
      cwd: dir,
      detached: true,
      env: { ...process.env, CI: "1", NO_COLOR: "1", FORCE_COLOR: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid) process.kill(-child.pid, "SIGKILL");
    }, TIMEOUT_MS);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, timedOut, ms: Date.now() - started, output });
    });
  });

/** The first failing test named in vitest's output, and how it failed. */
const firstFailure = (output: string): string => {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI colour codes
  const lines = output.replace(/\u001b\[[0-9;]*m/g, "").split("\n");
  const test = lines.find((l) => /^\s*FAIL\s.* > /.test(l)) ?? lines.find((l) => /^\s*(FAIL|×)\s/.test(l));
  const error = lines.find((l) => /^\s*(\w*Error|\w+Error\w*):/.test(l));
  const clip = (l: string | undefined, n: number) => l?.trim().replace(/\s+/g, " ").slice(0, n);
  return `${clip(test, 200) ?? "(no failing test named)"}\n           ${clip(error, 200) ?? ""}`;
};

const main = async (): Promise<number> => {
  const matchOnly = process.argv[2] === "--match";
  const only = matchOnly ? undefined : process.argv[2]?.split(",");
  const chosen = only ? mutations.filter((m) => only.includes(m.id)) : mutations;
  if (only && chosen.length !== only.length) {
    console.error(`unknown mutation id in ${only.join(",")}; known: ${mutations.map((m) => m.id).join(",")}`);
    return 2;
  }

  // Every entry must still match the source before anything runs.
  const stale = chosen.flatMap((m) => {
    const result = mutate(m, readFileSync(path.join(root, m.file), "utf8"));
    return typeof result === "string" ? [] : [`  ${m.id}: ${result.stale}`];
  });
  if (stale.length > 0) {
    console.error(
      `mutations that no longer match the source (update test/mutants/mutations.ts):\n${stale.join("\n")}`,
    );
    return 2;
  }
  if (matchOnly) return 0;

  const dir = mkdtempSync(path.join(tmpdir(), "jetstate-mutants-"));
  try {
    for (const entry of copied) {
      if (existsSync(path.join(root, entry)))
        cpSync(path.join(root, entry), path.join(dir, entry), { recursive: true });
    }
    symlinkSync(realpathSync(path.join(root, "node_modules")), path.join(dir, "node_modules"));

    const allTests = [...new Set(chosen.flatMap((m) => m.tests))];
    const baseline = await vitest(dir, allTests);
    if (baseline.code !== 0) {
      console.error(`the tests fail without any mutation (${firstFailure(baseline.output)}):`);
      console.error(baseline.output.slice(-4000));
      return 2;
    }
    console.log(`baseline: ${allTests.join(", ")} pass (${(baseline.ms / 1000).toFixed(1)} s)\n`);

    const survivors: string[] = [];
    for (const m of chosen) {
      const file = path.join(dir, m.file);
      const original = readFileSync(file, "utf8");
      writeFileSync(file, mutate(m, original) as string);
      const run = await vitest(dir, m.tests);
      writeFileSync(file, original);
      const seconds = `${(run.ms / 1000).toFixed(1)} s`;
      if (run.timedOut) {
        survivors.push(m.id);
        console.log(`SURVIVED ${m.id} (${m.what}): tests did not finish within ${TIMEOUT_MS / 1000} s`);
      } else if (run.code === 0) {
        survivors.push(m.id);
        console.log(`SURVIVED ${m.id} (${m.what}): ${m.tests.join(", ")} pass (${seconds})`);
      } else {
        console.log(`killed   ${m.id} (${m.what}) in ${seconds}: ${firstFailure(run.output)}`);
      }
    }
    console.log(`\n${chosen.length - survivors.length} of ${chosen.length} killed`);
    if (survivors.length > 0) console.log(`survived: ${survivors.join(", ")}`);
    return survivors.length > 0 ? 1 : 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

process.exitCode = await main();
