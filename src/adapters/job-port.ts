import type { JobRecord, JobSettings } from "../kernel/job-record.ts";

/**
 * What the job effects need from a broker. The NATS adapter implements it
 * (src/adapters/nats/job-broker.ts); tests can fake it. Every method is one
 * operation with its own deadline and retry of transient errors.
 */
export interface JobPort {
  createRecord(record: JobRecord): Promise<number>;
  getRecord(id: string): Promise<{ record: JobRecord; revision: number } | undefined>;
  /** Throws `RevisionConflict` when the record changed since `revision`. */
  updateRecord(record: JobRecord, revision: number): Promise<number>;
  deleteRecord(id: string, revision: number): Promise<void>;
  listRecords(): Promise<JobRecord[]>;
  publishTasks(record: JobRecord, bodies: readonly string[], signal: AbortSignal): Promise<void>;
  createConsumer(queue: string, jobId: string, settings: JobSettings): Promise<void>;
  consumerExists(queue: string, jobId: string): Promise<boolean>;
  removeTasks(queue: string, jobId: string): Promise<void>;
  announceCreated(queue: string, jobId: string): Promise<void>;
}
