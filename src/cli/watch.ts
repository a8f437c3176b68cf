import type { JobSnapshot, Runtime } from "../index.ts";
import { bar, duration, printable } from "./format.ts";
import { type GlobalOptions, jobOrNotFound, within } from "./session.ts";

const answered = (s: JobSnapshot) => s.done + s.failed + s.dead;

/** `running 45/100 done 40 failed 3 dead 2 1.5 tasks/s eta 36 s` */
const summary = (s: JobSnapshot) =>
  `${s.status} ${answered(s)}/${s.total} done ${s.done} failed ${s.failed} dead ${s.dead} ` +
  `${s.throughput} tasks/s eta ${s.etaMs === null ? "-" : duration(s.etaMs)}`;

/**
 * Follows the job until its end is recorded and resolves with the final
 * snapshot. On a terminal one line redrawn in place (bar, rate, ETA);
 * otherwise a line per change, for logs and CI. `--json`: nothing until the
 * end (the caller prints the final snapshot). Only finding the job is
 * bounded by `--timeout`: a job may run for hours.
 */
export const watchJob = async (rt: Runtime, id: string, g: GlobalOptions): Promise<JobSnapshot> => {
  const handle = await within(g.timeout + 1000, jobOrNotFound(rt, id), "jobs watch");
  const tty = process.stdout.isTTY === true && !g.json;
  let last = "";
  const show = (s: JobSnapshot) => {
    if (g.json) return;
    const line = tty ? `${bar(s.total === 0 ? 1 : answered(s) / s.total)} ${summary(s)}` : summary(s);
    if (line === last) return;
    last = line;
    process.stdout.write(tty ? `\r\x1b[2K${printable(line)}` : `${printable(line)}\n`);
  };
  show(handle.snapshot());
  const unsubscribe = handle.subscribe(show);
  try {
    const final = await handle.done();
    show(final);
    if (tty) process.stdout.write("\n");
    if (!g.json && final.reason) process.stdout.write(`reason: ${printable(final.reason)}\n`);
    return final;
  } finally {
    unsubscribe();
  }
};
