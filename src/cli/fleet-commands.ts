import type { Command } from "commander";
import type { CleanupReport, DeadLetter } from "../index.ts";
import { notFound } from "./exit-codes.ts";
import { clip, duration, print, printJson, table } from "./format.ts";
import { type GlobalOptions, recordOrNotFound, withRuntime } from "./session.ts";

/** `3` is a task index, anything else a task id: as `rt.jobs.redrive()` takes them. */
const taskRef = (value: string): string | number => (/^\d+$/.test(value) ? Number(value) : value);

const letterRows = (letters: readonly DeadLetter[], now: number) =>
  table(
    ["INDEX", "TASK", "DELIVERIES", "SOURCE", "DEAD SINCE", "ERROR"],
    letters.map((l) => [
      String(l.index),
      l.taskId,
      String(l.deliveries),
      l.source,
      `${duration(now - l.at)} ago`,
      clip(l.error.replace(/\s+/g, " "), 80),
    ]),
  );

export const registerDlq = (program: Command, globals: () => GlobalOptions): void => {
  const dlq = program.command("dlq").description("a job's dead tasks: list and redrive");

  dlq
    .command("ls <id>")
    .description("the job's tasks that exhausted their deliveries, with their last error")
    .action(async (id: string) => {
      const g = globals();
      const letters = await withRuntime(g, "jobs", async (rt) => {
        await recordOrNotFound(rt, id);
        return rt.jobs.deadLetters(id);
      });
      if (g.json) return printJson(letters);
      print(letters.length === 0 ? `no dead task in job ${id}` : letterRows(letters, Date.now()));
    });

  dlq
    .command("redrive <id> [tasks...]")
    .description("send the job's dead tasks (all, or those given by index or task id) back to the workers")
    .action(async (id: string, tasks: string[]) => {
      const g = globals();
      const refs = tasks.map(taskRef);
      const redriven = await withRuntime(g, "jobs", async (rt) => {
        await recordOrNotFound(rt, id);
        const letters = await rt.jobs.deadLetters(id);
        if (letters.length === 0) throw notFound(`no dead task in job ${id} to redrive`);
        const notDead = refs.filter((ref) => !letters.some((l) => l.index === ref || l.taskId === ref));
        if (notDead.length > 0) throw notFound(`task ${notDead.join(", ")} of job ${id} is not dead`);
        const handle = await rt.jobs.redrive(id, refs.length === 0 ? undefined : refs);
        const chosen = letters.filter(
          (l) => refs.length === 0 || refs.includes(l.index) || refs.includes(l.taskId),
        );
        return { job: handle.snapshot(), redriven: chosen.map((l) => l.index) };
      });
      if (g.json) return printJson(redriven);
      print(
        `redrove ${redriven.redriven.length} task(s) of job ${id}: ${redriven.redriven.join(", ")}\n` +
          `follow it: jetstate-jobs jobs watch ${id}`,
      );
    });
};

export const registerWorkers = (program: Command, globals: () => GlobalOptions): void => {
  program
    .command("workers")
    .description("live workers of every process, from their own announcements")
    .command("ls")
    .description("list live workers")
    .option("--queue <queue>", "only workers of this queue")
    .action(async (o: { queue?: string }) => {
      const g = globals();
      const workers = await withRuntime(g, "read", (rt) =>
        rt.workers.list(o.queue === undefined ? {} : { queue: o.queue }),
      );
      if (g.json) return printJson(workers);
      const now = Date.now();
      print(
        workers.length === 0
          ? `no live worker${o.queue ? ` on queue ${o.queue}` : ""}`
          : table(
              [
                "ID",
                "QUEUE",
                "IN FLIGHT",
                "PROCESSED",
                "FAILED",
                "AGENT",
                "RUNTIME",
                "HOST",
                "PID",
                "UP",
                "SEEN",
              ],
              workers.map((w) => [
                w.id,
                w.queue,
                `${w.inFlight}/${w.concurrency}`,
                String(w.processed),
                String(w.failed),
                w.agent ? `${w.agent}${w.target ? ` → ${w.target}` : ""}` : "-",
                w.runtime,
                w.host,
                String(w.pid),
                duration(now - w.startedAt),
                `${duration(now - w.seenAt)} ago`,
              ]),
            ),
      );
    });
};

export const registerAgents = (program: Command, globals: () => GlobalOptions): void => {
  program
    .command("agents")
    .description("registered agents and their current targets")
    .command("ls")
    .description("list registered agents")
    .action(async () => {
      const g = globals();
      const agents = await withRuntime(g, "read", (rt) => rt.agents.list());
      if (g.json) return printJson(agents);
      const now = Date.now();
      print(
        agents.length === 0
          ? "no agent registered"
          : table(
              ["AGENT", "CURRENT", "SWITCHES", "LAST SWITCH", "SKIPPED", "EXHAUSTED"],
              agents.map((a) => [
                a.agentId,
                a.current,
                String(a.switches),
                a.lastSwitch
                  ? `${a.lastSwitch.from} → ${a.lastSwitch.to} ${duration(now - a.lastSwitch.at)} ago: ${clip(a.lastSwitch.reason, 40)}`
                  : "-",
                a.skips
                  .filter((s) => s.until > now)
                  .map((s) => `${s.target} (${duration(s.until - now)})`)
                  .join(", ") || "-",
                a.exhausted ? `${a.exhausted.target} ${duration(now - a.exhausted.at)} ago` : "-",
              ]),
            ),
      );
    });
};

const cleanupKinds: readonly (keyof Omit<CleanupReport, "dryRun">)[] = [
  "consumersDeleted",
  "tasksPurged",
  "recordsRemoved",
  "resultsPurged",
  "leasesRemoved",
  "leasesAdded",
  "flowsRemoved",
];

export const registerCleanup = (program: Command, globals: () => GlobalOptions): void => {
  program
    .command("cleanup")
    .description(
      "remove what finished jobs and crashed runs left (consumers, tasks, expired records, leases, flows)",
    )
    .option("--dry-run", "only report what would be removed", false)
    .action(async (o: { dryRun: boolean }) => {
      const g = globals();
      const report = await withRuntime(g, "admin", (rt) => rt.admin.cleanup({ dryRun: o.dryRun }));
      if (g.json) return printJson(report);
      print(o.dryRun ? "dry run: nothing removed" : "cleaned up");
      print(
        table(
          ["WHAT", "COUNT", "NAMES"],
          cleanupKinds.map((k) => [k, String(report[k].length), clip(report[k].join(" "), 100) || "-"]),
        ),
      );
    });
};
