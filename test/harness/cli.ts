/**
 * The `jetstate-jobs` CLI as a user runs it: a child process, its stdout,
 * stderr and exit code. Built once per test file from the current sources
 * with the bin's own tsup settings (`cliBuild` in tsup.config.ts) into
 * node_modules/.cache, where it resolves its dependencies like the installed
 * bin does; `node --import tsx`
 * would compile the whole runtime on every run (3.5 s each here, against
 * 1.4 s for the bundle), and a CLI test runs it a dozen times.
 */
import { execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const repo = path.resolve(import.meta.dirname, "../..");

export interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** From spawn to exit. */
  readonly ms: number;
}

export interface BuiltCli {
  readonly bin: string;
  remove(): Promise<void>;
}

/** Builds src/cli/main.ts into a fresh directory: the bundle's path, and how to remove it. */
export const buildCli = async (): Promise<BuiltCli> => {
  const cache = path.join(repo, "node_modules/.cache");
  await mkdir(cache, { recursive: true });
  const outDir = await mkdtemp(path.join(cache, "jetstate-cli-test-"));
  const config = path.join(outDir, "tsup.config.ts");
  await writeFile(
    config,
    `import { cliBuild } from ${JSON.stringify(path.join(repo, "tsup.config.ts"))};\n` +
      // esbuild's tree shaking only, not rollup's second pass: the same modules, 2 s instead of 9.
      `export default { ...cliBuild, outDir: ${JSON.stringify(outDir)}, treeshake: false, silent: true };\n`,
  );
  await promisify(execFile)(
    process.execPath,
    [path.join(repo, "node_modules/tsup/dist/cli-default.js"), "--config", config],
    { cwd: repo },
  );
  return { bin: path.join(outDir, "cli.js"), remove: () => rm(outDir, { recursive: true, force: true }) };
};

/** Variables the CLI reads: none leaks in from the environment running the tests. */
const cliVariables = /^(NATS_|JETSTATE_|LOG_LEVEL$|NODE_ENV$)/;

/** Runs the CLI with `args` and these variables; killed (code null) after `boundMs`, or sent `interrupt` first. */
export const runCli = (
  bin: string,
  args: readonly string[],
  env: Record<string, string>,
  boundMs = 30_000,
  interrupt?: { readonly afterMs: number; readonly signal: NodeJS.Signals },
): Promise<CliRun> => runProcess(process.execPath, [bin, ...args], env, boundMs, interrupt);

/** The same on a pseudo-terminal, as from an engineer's shell: script(1) runs it, stdout is the terminal's output. */
export const runCliOnTerminal = (
  bin: string,
  args: readonly string[],
  env: Record<string, string>,
  onStdout?: (soFar: string) => void,
): Promise<CliRun> => {
  const command = [process.execPath, bin, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  return runProcess("script", ["-qec", command, "/dev/null"], env, 30_000, undefined, onStdout);
};

const runProcess = (
  file: string,
  args: readonly string[],
  env: Record<string, string>,
  boundMs: number,
  interrupt?: { readonly afterMs: number; readonly signal: NodeJS.Signals },
  onStdout?: (soFar: string) => void,
): Promise<CliRun> => {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !cliVariables.test(k)));
  const started = Date.now();
  const child = spawn(file, args, {
    env: { ...clean, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
    onStdout?.(stdout);
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), boundMs);
    const early = interrupt && setTimeout(() => child.kill(interrupt.signal), interrupt.afterMs);
    child.once("close", (code) => {
      clearTimeout(timer);
      clearTimeout(early);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
};
