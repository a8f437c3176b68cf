/**
 * Supervising runtimes in child processes (test/fixtures/job-supervisor.ts),
 * for the takeover tests: each a real OS process with its own connection and
 * supervision leases, ended with SIGKILL (the point of those tests) or
 * SIGTERM. The child's stdout is read as JSON lines (its own events and its
 * runtime's pino log).
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { waitUntil } from "./wait.ts";

const root = path.resolve(import.meta.dirname, "../..");
const FIXTURE = path.join(root, "test/fixtures/job-supervisor.ts");
const CHILD_DEADLINE_MS = 30_000;

export type Line = Record<string, unknown>;

export interface Child {
  readonly process: ChildProcessWithoutNullStreams;
  readonly pid: number;
  readonly exited: Promise<void>;
  /** Processes the child started (esbuild's service under tsx): they must go with it. */
  readonly descendants: Set<number>;
  waitFor(match: (line: Line) => boolean, what: string): Promise<Line>;
}

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

export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Starts `job-supervisor.ts` with `args`; `children` collects it for the clean-up. */
export const startChild = (args: string[], children: Child[]): Child => {
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
    pid: child.pid ?? -1,
    exited,
    descendants: new Set(),
    waitFor: async (match, what) => {
      let found: Line | undefined;
      await waitUntil(
        () => {
          for (const d of descendantsOf(handle.pid)) handle.descendants.add(d);
          found = lines.find(match);
          if (found) return true;
          // A child that died cannot print it any more: say why instead of timing out.
          if (exit !== undefined) throw new Error(`child ${child.pid} exited (${exit}): ${stderr}`);
          return false;
        },
        { timeoutMs: CHILD_DEADLINE_MS, message: `child ${child.pid}: ${what}` },
      );
      return found ?? {};
    },
  };
  children.push(handle);
  return handle;
};

export const killAndWait = async (child: Child, signal: NodeJS.Signals) => {
  if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill(signal);
  await child.exited;
};

/** Kills every child (SIGKILL) and checks nothing they started is left running. */
export const killAll = async (children: readonly Child[]) => {
  for (const child of children) await killAndWait(child, "SIGKILL");
  const all = children.flatMap((c) => [c.pid, ...c.descendants]);
  await waitUntil(() => all.every((pid) => !alive(pid)), {
    timeoutMs: 5000,
    message: `child processes gone (${all.filter(alive).join(", ")})`,
  });
};
