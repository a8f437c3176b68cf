import type { Command } from "commander";
import type { QueueSettings } from "../index.ts";
import { duration, print, printJson, table } from "./format.ts";
import { type GlobalOptions, withRuntime } from "./session.ts";

const rows = (queues: readonly QueueSettings[], now: number) =>
  table(
    ["QUEUE", "STATE", "RATE/S", "MAX CONCURRENCY", "PER TARGET", "PERMIT LEASE", "UPDATED"],
    queues.map((q) => [
      q.queue,
      q.paused ? "paused" : "running",
      q.ratePerSecond === undefined ? "-" : String(q.ratePerSecond),
      q.maxConcurrency === undefined ? "-" : String(q.maxConcurrency),
      perTargetText(q),
      q.permitLeaseMs === undefined ? "-" : duration(q.permitLeaseMs),
      q.updatedAt === 0 ? "-" : `${duration(now - q.updatedAt)} ago`,
    ]),
  );

/** The per-target limits in one cell: `2 at once, 10/s`, or `-`. */
const perTargetText = (q: QueueSettings): string => {
  const t = q.perTarget;
  if (!t) return "-";
  const parts = [
    ...(t.maxConcurrency === undefined ? [] : [`${t.maxConcurrency} at once`]),
    ...(t.ratePerSecond === undefined ? [] : [`${t.ratePerSecond}/s`]),
  ];
  return parts.join(", ");
};

/**
 * A limit flag: a whole number, or `none` to lift the limit; anything else
 * is left to the runtime to refuse. (Commander turns a parser's `null` into
 * an empty string: `none` is mapped in the action.)
 */
const limit = (value: string): number | "none" => (value === "none" ? "none" : Number(value));
const lifted = (value: number | "none"): number | null => (value === "none" ? null : value);

interface ConfigureFlags {
  readonly rate?: number | "none";
  readonly maxConcurrency?: number | "none";
  readonly perTargetRate?: number | "none";
  readonly perTargetMaxConcurrency?: number | "none";
  readonly permitLeaseMs?: number | "none";
}

/** `queues ls | pause | resume | configure`: the queues' pause and limits, from any machine (`rt.queues`). */
export const registerQueues = (program: Command, globals: () => GlobalOptions): void => {
  const queues = program.command("queues").description("pause, resume and limit queues across every worker");

  queues
    .command("ls")
    .description("queues that were ever configured or paused, with their state and limits")
    .action(async () => {
      const g = globals();
      const list = await withRuntime(g, "read", (rt) => rt.queues.list());
      if (g.json) return printJson(list);
      print(list.length === 0 ? "no queue configured" : rows(list, Date.now()));
    });

  for (const [name, what] of [
    ["pause", "stop every worker of the queue from starting its tasks (running ones finish)"],
    ["resume", "let the queue's workers start its tasks again"],
  ] as const) {
    queues
      .command(`${name} <queue>`)
      .description(what)
      .action(async (queue: string) => {
        const g = globals();
        const settings = await withRuntime(g, "admin", (rt) =>
          name === "pause" ? rt.queues.pause(queue) : rt.queues.resume(queue),
        );
        if (g.json) return printJson(settings);
        print(`queue ${queue} ${settings.paused ? "paused" : "running"}`);
      });
  }

  queues
    .command("configure <queue>")
    .description("set the queue's limits across every worker of every process")
    .option("--rate <n>", "tasks started per second at most (none: no limit)", limit)
    .option("--max-concurrency <n>", "handlers running at once at most (none: no limit)", limit)
    .option(
      "--per-target-rate <n>",
      "tasks started per second at most against each agent target (none: no limit)",
      limit,
    )
    .option(
      "--per-target-max-concurrency <n>",
      "handlers running at once at most against each agent target (none: no limit)",
      limit,
    )
    .option(
      "--permit-lease-ms <ms>",
      "how long a held permit lasts with no word from its worker, for handlers that hold the event loop (none: the default, 5000)",
      limit,
    )
    .action(async (queue: string, o: ConfigureFlags) => {
      const g = globals();
      const perTarget = {
        ...(o.perTargetRate === undefined ? {} : { ratePerSecond: lifted(o.perTargetRate) }),
        ...(o.perTargetMaxConcurrency === undefined
          ? {}
          : { maxConcurrency: lifted(o.perTargetMaxConcurrency) }),
      };
      const settings = await withRuntime(g, "admin", (rt) =>
        rt.queues.configure(queue, {
          ...(o.rate === undefined ? {} : { ratePerSecond: lifted(o.rate) }),
          ...(o.maxConcurrency === undefined ? {} : { maxConcurrency: lifted(o.maxConcurrency) }),
          ...(Object.keys(perTarget).length === 0 ? {} : { perTarget }),
          ...(o.permitLeaseMs === undefined ? {} : { permitLeaseMs: lifted(o.permitLeaseMs) }),
        }),
      );
      if (g.json) return printJson(settings);
      print(rows([settings], Date.now()));
    });
};
