import type { DelayedTasks } from "./delayed-tasks.ts";
import type { JobRecords } from "./job-records.ts";
import type { TaskSetup } from "./task-queue.ts";

/**
 * What the job effects (submit, finalize, cancel, reap) need from a broker:
 * the job's record and its tasks (those held until due included). Both brokers implement it; the effect
 * tests fake it (test/unit/fake-job-port.ts). Every method is one
 * operation with its own deadline and retry of transient errors.
 */
export interface JobPort extends JobRecords, TaskSetup, Pick<DelayedTasks, "holdTasks"> {}
