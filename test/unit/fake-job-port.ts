import type { JobPort } from "../../src/adapters/job-port.ts";
import { RevisionConflict } from "../../src/kernel/errors.ts";
import type { JobRecord, JobSettings, JobTasksRef } from "../../src/kernel/job-record.ts";
import { defaultSettings } from "../harness/finished-records.ts";

/**
 * A JobPort kept in a Map, with compare-and-set revisions like KV's, a log
 * of every call, and hooks to make one call fail. It is the oracle of the
 * job-effect tests: what the effects left in it is read back raw. A lane
 * job has no consumer: its stored task, or a result of it (`answered`: a
 * worker stores the result, then acks the task away), is its commit.
 */
export const fakeJobPort = () => {
  const records = new Map<string, { record: JobRecord; revision: number; storedAt?: number }>();
  const consumers = new Set<string>();
  const tasks = new Map<string, readonly string[]>();
  /** Jobs a result of which is stored. */
  const answered = new Set<string>();
  const calls: string[] = [];
  let sequence = 0;
  const failures: Partial<Record<keyof JobPort, (() => unknown)[]>> = {};
  /** The next call of `method` runs `fail` first (it may throw, or change the store). */
  const failNext = (method: keyof JobPort, fail: () => unknown) => {
    const list = failures[method] ?? [];
    list.push(fail);
    failures[method] = list;
  };
  const hook = (method: keyof JobPort) => {
    const next = failures[method]?.shift();
    if (next) next();
  };
  const conflict = (key: string) => new RevisionConflict({ message: `conflict on ${key}`, key });
  /** Stores `record` as a write would; `storedAt`: the server's stamp of that write (none: a store that keeps no time). */
  const put = (record: JobRecord, storedAt?: number) => {
    sequence += 1;
    records.set(record.id, { record, revision: sequence, ...(storedAt === undefined ? {} : { storedAt }) });
    return sequence;
  };
  const port: JobPort = {
    createRecord: async (record) => {
      calls.push(`createRecord ${record.id}`);
      hook("createRecord");
      if (records.has(record.id)) throw conflict(record.id);
      return put(record);
    },
    getRecord: async (id) => {
      calls.push(`getRecord ${id}`);
      hook("getRecord");
      const found = records.get(id);
      return (
        found && {
          record: found.record,
          revision: found.revision,
          ...(found.storedAt === undefined ? {} : { storedAt: found.storedAt }),
        }
      );
    },
    updateRecord: async (record, revision) => {
      calls.push(`updateRecord ${record.id} ${record.phase} ${record.status}`);
      hook("updateRecord");
      const found = records.get(record.id);
      if (!found || found.revision !== revision) throw conflict(record.id);
      return put(record);
    },
    deleteRecord: async (id) => {
      calls.push(`deleteRecord ${id}`);
      records.delete(id);
    },
    listRecords: async () => {
      calls.push("listRecords");
      return [...records.values()].map((r) => r.record);
    },
    publishTasks: async (record, bodies) => {
      calls.push(`publishTasks ${record.id} ${bodies.length}`);
      hook("publishTasks");
      tasks.set(record.id, [...bodies]);
    },
    holdTasks: async (record, held) => {
      calls.push(`holdTasks ${record.id} ${held.length}`);
      hook("holdTasks");
    },
    createConsumer: async (queue, jobId, _settings: JobSettings) => {
      calls.push(`createConsumer ${queue} ${jobId}`);
      hook("createConsumer");
      consumers.add(jobId);
    },
    tasksCommitted: async (job) => {
      calls.push(`tasksCommitted ${named(job)}`);
      hook("tasksCommitted");
      return job.lane ? tasks.has(job.id) || answered.has(job.id) : consumers.has(job.id);
    },
    restoreConsumer: async (job) => {
      calls.push(`restoreConsumer ${named(job)}`);
      if (consumers.has(job.id)) return "present";
      if (!tasks.has(job.id)) return "empty";
      consumers.add(job.id);
      return "restored";
    },
    tasksMark: async (job) => {
      calls.push(`tasksMark ${named(job)}`);
      hook("tasksMark");
      return sequence + 1;
    },
    removeTasks: async (job) => {
      calls.push(`removeTasks ${named(job)}`);
      hook("removeTasks");
      tasks.delete(job.id);
      if (!job.lane) consumers.delete(job.id);
    },
    announceCreated: async (queue, jobId) => {
      calls.push(`announceCreated ${queue} ${jobId}`);
      hook("announceCreated");
    },
  };
  return { port, records, consumers, tasks, answered, calls, failNext, put };
};

/** A job as the call log names it: `<queue> <id>`, and ` lane` for a lane job. */
const named = (job: JobTasksRef) => `${job.queue} ${job.id}${job.lane ? " lane" : ""}`;

export { defaultSettings as settings };

export const record = (overrides: Partial<JobRecord> = {}): JobRecord => ({
  v: 1,
  id: "j1",
  queue: "q",
  status: "queuing",
  phase: "submitting",
  total: 2,
  submitId: "s1",
  settings: defaultSettings,
  counts: { done: 0, failed: 0, dead: 0 },
  createdAt: 1000,
  updatedAt: 1000,
  commitDeadline: 31_000,
  ...overrides,
});

/** A lane job's record: one task, the lane's ack wait. */
export const laneRecord = (overrides: Partial<JobRecord> = {}): JobRecord =>
  record({ total: 1, lane: true, ...overrides });
