/**
 * Child processes that print JSON lines (test fixtures run as real OS
 * processes, so a SIGKILL is a real death): spawned with `node --import tsx`
 * (not the tsx CLI, which runs the script in a second node process that a
 * SIGKILL to the CLI would orphan), their lines collected, waited for with a
 * deadline, and ended with a signal. A child that exits while a line is
 * awaited fails the wait with its exit and stderr instead of a timeout.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { waitUntil } from "./wait.ts";

export type Line = Record<string, unknown>;

export interface Child {
  readonly name: string;
  readonly process: ChildProcessWithoutNullStreams;
  readonly pid: number;
  /** Every line printed so far, parsed (a line that is not JSON as `{ text }`). */
  readonly lines: readonly Line[];
  /** What it printed to stderr so far. */
  stderr(): string;
  readonly exited: Promise<void>;
  /** Processes the child started (esbuild's service under tsx), seen while waiting: they must go with it. */
  readonly descendants: Set<number>;
  /** The first line that matches, once printed. */
  waitFor(match: (line: Line) => boolean, what: string, timeoutMs?: number): Promise<Line>;
  /** Writes one line to its stdin. */
  send(line: string): void;
  /** Sends the signal unless it has exited, and waits for its exit. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

/** Child processes of `pid`, and theirs, from /proc. */
export const descendantsOf = (pid: number): number[] => {
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

export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Starts `node --import tsx <script> ...args` in `cwd`. */
export const startChild = (name: string, cwd: string, script: string, args: string[]): Child => {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], {
    cwd,
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
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${name}: not started`);
  const handle: Child = {
    name,
    process: child,
    pid,
    lines,
    stderr: () => stderr,
    exited,
    descendants: new Set(),
    waitFor: async (match, what, timeoutMs = 30_000) => {
      let found: Line | undefined;
      await waitUntil(
        () => {
          for (const d of descendantsOf(pid)) handle.descendants.add(d);
          found = lines.find(match);
          // A child that died cannot print it any more: no need to wait out the deadline.
          return found !== undefined || exit !== undefined;
        },
        { timeoutMs, intervalMs: 50, message: `${name} (${pid}): ${what}` },
      );
      if (found === undefined) throw new Error(`${name} (${pid}) exited (${exit}) before ${what}: ${stderr}`);
      return found;
    },
    send: (line) => {
      child.stdin.write(`${line}\n`);
    },
    kill: async (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
  return handle;
};
