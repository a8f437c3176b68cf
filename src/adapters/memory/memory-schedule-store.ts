import { parseScheduleRecord } from "../../kernel/schedule-record.ts";
import type { ScheduleStore, StoredSchedule } from "../schedule-store.ts";
import type { KvEntry, MemoryKv } from "./memory-kv.ts";

const storedOf = (entry: KvEntry | undefined): StoredSchedule | undefined =>
  entry?.value === undefined
    ? undefined
    : {
        record: parseScheduleRecord(entry.key, JSON.parse(entry.value)),
        revision: entry.revision,
        ...(entry.storedAt === undefined ? {} : { storedAt: entry.storedAt }),
      };

/**
 * Schedules in the memory server's bucket, shared by every runtime on the
 * server as a KV bucket is, with its compare-and-set rules (`MemoryKv`).
 * Records go in and out as JSON, so no caller holds what another reads.
 */
export const memoryScheduleStore = (kv: MemoryKv, open: (operation: string) => void): ScheduleStore => ({
  read: async (id) => {
    open("schedules.read");
    return storedOf(kv.get("schedules.read", id));
  },
  list: async (unreadable) => {
    open("schedules.list");
    return kv.live().flatMap((entry) => {
      try {
        return storedOf(entry) ?? [];
      } catch (error) {
        if (!unreadable) throw error;
        unreadable(entry.key, error);
        return [];
      }
    });
  },
  create: async (record) => {
    open("schedules.create");
    return kv.create("schedules.create", record.id, JSON.stringify(record));
  },
  update: async (record, revision) => {
    open("schedules.update");
    return kv.update("schedules.update", record.id, JSON.stringify(record), revision);
  },
  remove: async (id, revision) => {
    open("schedules.remove");
    const entry = kv.get("schedules.remove", id);
    if (entry?.value === undefined) return false;
    kv.delete("schedules.remove", id, revision ?? entry.revision);
    return true;
  },
  // The server's clock itself, read now (none for a bucket made without one).
  serverTime: () => {
    const at = kv.time();
    return at === undefined ? undefined : { at, seenAt: performance.now() };
  },
});
