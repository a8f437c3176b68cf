/**
 * `jetstate-jobs jobs ls`: its DONE/TOTAL column is the tasks done (succeeded)
 * of all, as its name says; failed and dead tasks have their own columns. It
 * showed 3/3 for a job whose tasks were done 2, failed 1. Expected rows
 * written by hand.
 */
import { expect, it } from "vitest";
import { listRows } from "../../src/cli/jobs-commands.ts";
import { finishedRecord } from "../harness/finished-records.ts";

it("DONE/TOTAL counts the tasks done only, FAILED and DEAD their own", () => {
  const at = Date.UTC(2026, 0, 1);
  const job = {
    ...finishedRecord(1, at, "detect"),
    id: "j1",
    status: "failed" as const,
    total: 4,
    counts: { done: 2, failed: 1, dead: 1 },
    reason: "2 of 4 tasks failed",
  };
  const [header, row] = listRows([job], at + 5000).split("\n");
  expect(header).toMatch(/^ID\s+QUEUE\s+STATUS\s+PRIORITY\s+DONE\/TOTAL\s+FAILED\s+DEAD\s+UPDATED/);
  expect(row).toMatch(/^j1\s+detect\s+failed\s+0\s+2\/4\s+1\s+1\s+5 s ago\s+-\s+2 of 4 tasks failed$/);
});
