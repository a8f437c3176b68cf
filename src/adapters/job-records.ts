import type { JobRecord } from "../kernel/job-record.ts";

/**
 * Job records (a KV bucket on NATS): read and written with compare-and-set
 * on the revision, so concurrent writers (a supervisor, the reaper, a
 * cancel) never overwrite each other blindly.
 */
export interface JobRecords {
  createRecord(record: JobRecord): Promise<number>;
  getRecord(id: string): Promise<{ record: JobRecord; revision: number } | undefined>;
  /** Throws `RevisionConflict` when the record changed since `revision`. */
  updateRecord(record: JobRecord, revision: number): Promise<number>;
  deleteRecord(id: string, revision: number): Promise<void>;
  listRecords(): Promise<JobRecord[]>;
}

/** Every record as it changes: how a runtime hears of an end written elsewhere. */
export interface RecordWatch {
  /** Calls `onRecord` with every record, then with every change, until `signal` aborts. */
  watchRecords(onRecord: (record: JobRecord) => void, signal: AbortSignal): Promise<void>;
}
