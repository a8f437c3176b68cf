import { hostname, userInfo } from "node:os";

/** The user's name; a container's uid without a passwd entry has none (userInfo() throws): its uid. */
const whoAmI = (): string => {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? `uid ${process.getuid?.() ?? "?"}`;
  }
};

import type { Command } from "commander";
import { type JobRecord, type JobSnapshot, type JobStatus, scheduleOfJob } from "../index.ts";
import { explainStill, type Reason } from "./diagnosis.ts";
import { ExitCode } from "./exit-codes.ts";
import { clip, duration, fields, print, printJson, table, when } from "./format.ts";
import { type GlobalOptions, jobOrNotFound, recordOrNotFound, withRuntime } from "./session.ts";
import { watchJob } from "./watch.ts";

const isOver = (status: JobStatus) => status === "succeeded" || status === "failed";

/** Where a job came from: the schedule and tick that submitted it, else `-`. */
const fromOf = (j: JobRecord): string => {
  const from = scheduleOfJob(j);
  return from ? `schedule ${from.scheduleId} @ ${new Date(from.tick).toISOString()}` : "-";
};

/** `jobs ls`: one row per job; DONE/TOTAL is its tasks done (succeeded) of all, FAILED and DEAD beside it. */
export const listRows = (jobs: readonly JobRecord[], now: number) =>
  table(
    ["ID", "QUEUE", "STATUS", "PRIORITY", "DONE/TOTAL", "FAILED", "DEAD", "UPDATED", "FROM", "REASON"],
    jobs.map((j) => [
      j.id,
      j.queue,
      j.status,
      String(j.settings.priority ?? 0),
      `${j.counts.done}/${j.total}`,
      String(j.counts.failed),
      String(j.counts.dead),
      `${duration(now - j.updatedAt)} ago`,
      fromOf(j),
      clip(j.reason ?? "", 60),
    ]),
  );

/** A job as stored: counts and times (live rate and ETA are `jobs watch`'s). */
const recordFields = (j: JobRecord, now: number) =>
  fields([
    ["job", j.id],
    ["queue", j.queue],
    ["status", j.status],
    ["priority", String(j.settings.priority ?? 0)],
    ["tasks", `${j.total} (done ${j.counts.done}, failed ${j.counts.failed}, dead ${j.counts.dead})`],
    ["created", when(j.createdAt, now)],
    ["updated", when(j.updatedAt, now)],
    // A delayed job: when its first held task is due, and its last (the stall clock waits for it).
    ...(j.runAt === undefined ? [] : ([["runs at", dueWhen(j.runAt, now)]] as const)),
    ...(j.dueUntil === undefined || j.dueUntil === j.runAt
      ? []
      : ([["last due", dueWhen(j.dueUntil, now)]] as const)),
    ...(j.finishedAt === undefined ? [] : ([["finished", when(j.finishedAt, now)]] as const)),
    ...(j.reason ? ([["reason", j.reason]] as const) : []),
  ]);

/** A due time: "in …" while ahead, "… ago" once passed. */
const dueWhen = (at: number, now: number): string =>
  at > now ? `${new Date(at).toISOString()} (in ${duration(at - now)})` : when(at, now);

const snapshotFields = (s: JobSnapshot) =>
  fields([
    ["job", s.id],
    ["queue", s.queue],
    ["status", s.status],
    ["priority", String(s.priority)],
    ["tasks", `${s.total} (done ${s.done}, failed ${s.failed}, dead ${s.dead})`],
    ...(s.reason ? ([["reason", s.reason]] as const) : []),
  ]);

const reasonLines = (reasons: readonly Reason[]): string =>
  reasons.map((r) => `why: ${r.message}${r.next ? `\n  next: ${r.next}` : ""}`).join("\n");

export const registerJobs = (program: Command, globals: () => GlobalOptions): void => {
  const jobs = program.command("jobs").description("list, show, watch and cancel jobs");

  jobs
    .command("ls")
    .description("list jobs, most recently written last")
    .option("--queue <queue>", "only jobs of this queue")
    .option("--status <status>", "only jobs of this status (queuing, running, stalled, succeeded, failed)")
    .option("--limit <n>", "jobs per page, 1 to 1000 (default 100)")
    .option("--cursor <cursor>", "the `next` cursor of the page before")
    .action(async (o: { queue?: string; status?: string; limit?: string; cursor?: string }) => {
      const g = globals();
      const page = await withRuntime(g, "jobs", (rt) =>
        rt.jobs.list({
          ...(o.queue === undefined ? {} : { queue: o.queue }),
          ...(o.status === undefined ? {} : { status: o.status as JobStatus }),
          // Passed as given: the runtime's InvalidArgument names what is wrong with it.
          ...(o.limit === undefined ? {} : { limit: Number(o.limit) }),
          ...(o.cursor === undefined ? {} : { cursor: o.cursor }),
        }),
      );
      if (g.json) return printJson(page);
      print(page.jobs.length === 0 ? "no jobs" : listRows(page.jobs, Date.now()));
      // The filter with the cursor: a cursor given back with another filter is refused.
      if (page.next) {
        const filter = [
          ...(o.queue === undefined ? [] : ["--queue", o.queue]),
          ...(o.status === undefined ? [] : ["--status", o.status]),
        ];
        print(`more: ${[...filter, "--cursor", page.next].join(" ")}`);
      }
    });

  jobs
    .command("show <id>")
    .description("a job as stored (counts, times, reason); when it is not moving, why")
    .action(async (id: string) => {
      const g = globals();
      const shown = await withRuntime(g, "jobs", async (rt) => {
        const job = await recordOrNotFound(rt, id);
        const reasons = isOver(job.status) && job.counts.dead === 0 ? [] : await explainStill(rt, job);
        return { job, reasons };
      });
      if (g.json) return printJson(shown);
      print(recordFields(shown.job, Date.now()));
      if (shown.reasons.length > 0) print(reasonLines(shown.reasons));
    });

  jobs
    .command("watch <id>")
    .description(
      "follow a job until it ends: a progress bar on a terminal, one line per change otherwise; exit 0 if it succeeded, 1 if it failed",
    )
    .action(async (id: string) => {
      const g = globals();
      const final = await withRuntime(g, "jobs", (rt) => watchJob(rt, id, g), false);
      if (g.json) printJson(final);
      if (final.status !== "succeeded") process.exitCode = ExitCode.failed;
    });

  jobs
    .command("cancel <id>")
    .description("end a job as failed: its remaining tasks are removed")
    .option("--reason <reason>", "recorded as the job's reason")
    .action(async (id: string, o: { reason?: string }) => {
      const g = globals();
      const reason = o.reason ?? `cancelled with jetstate-jobs by ${whoAmI()}@${hostname()}`;
      const final = await withRuntime(g, "jobs", async (rt) => (await jobOrNotFound(rt, id)).cancel(reason));
      if (g.json) return printJson(final);
      print(snapshotFields(final));
    });
};
