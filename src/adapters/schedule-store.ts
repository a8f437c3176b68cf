import type { ServerTime } from "../kernel/clock.ts";
import type { ScheduleRecord } from "../kernel/schedule-record.ts";

export type { ServerTime } from "../kernel/clock.ts";

export interface StoredSchedule {
  readonly record: ScheduleRecord;
  readonly revision: number;
  /**
   * When the server stored this entry, by the server's clock (epoch ms): the
   * times a writer put in it (`since`, `lastTick`) are judged against it.
   * Absent where the store keeps no time.
   */
  readonly storedAt?: number;
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
  /**
   * The server's clock as this store last read it (on NATS, the creation
   * stamp of a listing's consumer, paired with the moment before it was asked
   * for: no earlier than the server's time then, later by at most the round
   * trip, so that a slow answer never reads as this host's clock ahead; in
   * memory, the server's clock now); undefined before any read, where the
   * store has no server, or while the reading may be off (NATS: this host
   * slept or its clock was set since, or it is old; the next listing reads it
   * again).
   */
  serverTime(): ServerTime | undefined;
}
