import type { Command } from "commander";
import type { ScheduleInfo } from "../index.ts";
import { notFound } from "./exit-codes.ts";
import { clip, print, printJson, table } from "./format.ts";
import { type GlobalOptions, withRuntime } from "./session.ts";

const iso = (at: number | undefined): string => (at === undefined ? "-" : new Date(at).toISOString());

const ruleOf = (s: ScheduleInfo): string =>
  "cron" in s.rule
    ? `cron ${s.rule.cron}${s.rule.timezone ? ` (${s.rule.timezone})` : ""}`
    : `every ${s.rule.everyMs} ms`;

/** `schedules ls` and `schedules rm <id>`: recurring jobs, through `rt.schedules` only. */
export const registerSchedules = (program: Command, globals: () => GlobalOptions): void => {
  const schedules = program.command("schedules").description("list and remove recurring jobs");

  schedules
    .command("ls")
    .description("list schedules: rule, queue, missed-tick policy, last and next tick")
    .action(async () => {
      const g = globals();
      const list = await withRuntime(g, "jobs", (rt) => rt.schedules.list());
      if (g.json) return printJson(list);
      print(
        list.length === 0
          ? "no schedules"
          : table(
              ["ID", "RULE", "QUEUE", "MISSED", "LAST TICK", "NEXT TICK"],
              list.map((s) => [
                s.id,
                clip(ruleOf(s), 50),
                s.job.queue,
                s.missed,
                iso(s.lastTick),
                iso(s.nextTick),
              ]),
            ),
      );
    });

  schedules
    .command("rm <id>")
    .description("remove a schedule: no tick of it fires after every runtime's next pass")
    .action(async (id: string) => {
      const g = globals();
      const removed = await withRuntime(g, "jobs", (rt) => rt.schedules.remove(id));
      if (!removed) throw notFound(`no schedule ${id}`);
      if (g.json) return printJson({ id, removed });
      print(`schedule ${id} removed`);
    });
};
