import type { ScheduleRecord } from "../kernel/schedule-record.ts";

export interface StoredSchedule {
  readonly record: ScheduleRecord;
  readonly revision: number;
}

/**
 * Schedules, one key per schedule id (`<prefix>_schedules` on NATS, the
 * memory server's bucket in memory). Every write is a compare-and-set on the
 * key's revision: two upserts, or an upsert and a scheduler moving
 * `lastTick`, never overwrite each other unseen.
 */
export interface ScheduleStore {
  read(id: string): Promise<StoredSchedule | undefined>;
  /**
   * Every stored schedule. A record this version cannot read (a newer
   * version's, one edited by hand) is handed to `unreadable` and left out;
   * without it, the list throws.
   */
  list(unreadable?: (id: string, error: unknown) => void): Promise<StoredSchedule[]>;
  /** Creates the record; throws `RevisionConflict` when it already exists. */
  create(record: ScheduleRecord): Promise<number>;
  /** Replaces the record at `revision`; throws `RevisionConflict` when another writer got there first. */
  update(record: ScheduleRecord, revision: number): Promise<number>;
  /** Deletes the record at `revision` (any revision when absent); false when there was none. */
  remove(id: string, revision?: number): Promise<boolean>;
}
