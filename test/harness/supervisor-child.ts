/**
 * Supervising runtimes in child processes (test/fixtures/job-supervisor.ts),
 * for the takeover tests: each a real OS process with its own connection and
 * supervision leases, ended with SIGKILL (the point of those tests) or
 * SIGTERM. The child's stdout is read as JSON lines (its own events and its
 * runtime's pino log), as every child of `child-processes.ts` is.
 */
import path from "node:path";
import { alive, type Child, startChild as startProcess } from "./child-processes.ts";
import { waitUntil } from "./wait.ts";

export type { Child, Line } from "./child-processes.ts";

const root = path.resolve(import.meta.dirname, "../..");
const FIXTURE = path.join(root, "test/fixtures/job-supervisor.ts");

/** Starts `job-supervisor.ts` with `args`; `children` collects it for the clean-up. */
export const startChild = (args: string[], children: Child[]): Child => {
  const child = startProcess("supervisor", root, FIXTURE, args);
  children.push(child);
  return child;
};

export const killAndWait = (child: Child, signal: NodeJS.Signals): Promise<void> => child.kill(signal);

/** Kills every child (SIGKILL) and checks nothing they started is left running. */
export const killAll = async (children: readonly Child[]) => {
  for (const child of children) await killAndWait(child, "SIGKILL");
  const all = children.flatMap((c) => [c.pid, ...c.descendants]);
  await waitUntil(() => all.every((pid) => !alive(pid)), {
    timeoutMs: 5000,
    message: `child processes gone (${all.filter(alive).join(", ")})`,
  });
};
