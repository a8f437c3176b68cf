import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { FaultRecovery } from "./measure.ts";

/** The performance targets: printed next to what a run measured, never asserted. */
export const TARGETS = { recoveryMs: 5_000, duplicatePercent: 1 } as const;

/** What one run of a scenario measured; `error` when a check failed. */
export interface RunReport {
  readonly scenario: string;
  readonly run: number;
  readonly pass: boolean;
  readonly error?: string;
  readonly tasks: number;
  /** Workers × concurrency: the tasks a crash can catch in a handler. */
  readonly inFlight: number;
  readonly workersStarted: number;
  /** From the submit to the job's end, ms; undefined when it did not end. */
  readonly jobMs?: number;
  readonly faults: readonly FaultRecovery[];
  /** Handler runs beyond the first (workers' ledgers). */
  readonly duplicateRuns?: number;
  /** Results stored beyond one per task (raw results stream). */
  readonly storedDuplicates?: number;
  /** Where the run's ledgers and logs are. */
  readonly dir: string;
  readonly notes: Readonly<Record<string, string | number>>;
}

const max = (xs: readonly number[]) => (xs.length === 0 ? undefined : Math.max(...xs));

/** One line per run, the targets beside the figures. */
export const printReports = (title: string, reports: readonly RunReport[]): void => {
  const rows = reports.map((r) => {
    const gap = max(r.faults.flatMap((f) => (f.longestGapMs === undefined ? [] : [f.longestGapMs])));
    const first = max(r.faults.flatMap((f) => (f.firstResultMs === undefined ? [] : [f.firstResultMs])));
    const dupPct = r.duplicateRuns === undefined ? undefined : (100 * r.duplicateRuns) / r.tasks;
    return {
      run: r.run,
      result: r.pass ? "pass" : "FAIL",
      "job s": r.jobMs === undefined ? "-" : (r.jobMs / 1000).toFixed(1),
      faults: r.faults.length,
      [`stall max ms (≤ ${TARGETS.recoveryMs})`]: gap ?? "-",
      "1st result max ms": first ?? "-",
      [`dup runs (≤ ${TARGETS.duplicatePercent} %)`]:
        dupPct === undefined ? "-" : `${r.duplicateRuns} (${dupPct.toFixed(2)} %)`,
      "dup / in flight": r.duplicateRuns === undefined ? "-" : (r.duplicateRuns / r.inFlight).toFixed(2),
      "stored dups": r.storedDuplicates ?? "-",
    };
  });
  console.log(`\n=== chaos: ${title}`);
  console.table(rows);
  for (const r of reports) {
    const faults = r.faults
      .map(
        (f) =>
          `${f.what} @${f.atMs} ms: 1st result +${f.firstResultMs ?? "none"} ms, stall ${f.longestGapMs ?? "-"} ms` +
          (f.elections === undefined ? "" : `; leaders elected: ${f.elections}`),
      )
      .join("; ");
    console.log(`run ${r.run}: ${faults}`);
    const notes = Object.entries(r.notes).map(([k, v]) => `${k}=${v}`);
    if (notes.length > 0) console.log(`run ${r.run} notes: ${notes.join(", ")}`);
    if (r.error !== undefined) console.log(`run ${r.run} failed: ${r.error}\n  ledgers and logs: ${r.dir}`);
  }
};

/** Writes `<dir>/<scenario>.json`: every run's report and the targets. */
export const writeReports = async (dir: string, scenario: string, reports: readonly RunReport[]) => {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${scenario}.json`);
  await writeFile(file, `${JSON.stringify({ scenario, targets: TARGETS, runs: reports }, null, 2)}\n`);
  return file;
};
