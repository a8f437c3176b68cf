import { randomUUID } from "node:crypto";
import type { JobRecord } from "../../kernel/job-record.ts";
import { decodeRecord, encodeRecord } from "../../kernel/job-record-codec.ts";
import { recordPicker, scanBound, storeTag, type UnreadableRecord } from "../../kernel/list-page.ts";
import { LinkedControllers, whenAborted } from "../../kernel/signals.ts";
import type { RecordFound, RecordsPage, RecordsPageQuery } from "../job-records.ts";
import type { MemoryServerState } from "./memory-server.ts";

/** The job's record as its server holds it, with its revision and the server's stamp of it; undefined when there is none. */
export const storedRecord = (
  server: MemoryServerState,
  operation: string,
  id: string,
): RecordFound | undefined => {
  const entry = server.records.get(operation, id);
  return entry?.value === undefined
    ? undefined
    : {
        record: decodeRecord(entry.value),
        revision: entry.revision,
        ...(entry.storedAt === undefined ? {} : { storedAt: entry.storedAt }),
      };
};

/**
 * The job records of the memory broker: its server's KV of records, with
 * compare-and-set on the revision, pages and watches as on NATS
 * (adapters/job-records.ts is the port).
 */
/** Each records store's tag, made on first use: a memory server's store is never made again. */
const incarnations = new WeakMap<object, string>();
const incarnationOf = (store: object): string => {
  let tag = incarnations.get(store);
  if (tag === undefined) {
    tag = storeTag(randomUUID());
    incarnations.set(store, tag);
  }
  return tag;
};

export class MemoryJobRecords {
  readonly #server: MemoryServerState;
  readonly #open: (operation: string) => void;
  /**
   * Each watch's stop, aborted when the broker or its server closes (the
   * watches end then): linked to the broker's stop, as an `AbortSignal.any`
   * each left a weak reference in it for good (Node 20).
   */
  readonly #watches: LinkedControllers;

  constructor(server: MemoryServerState, open: (operation: string) => void, stop: AbortSignal) {
    this.#server = server;
    this.#open = open;
    this.#watches = new LinkedControllers(stop);
  }

  async createRecord(record: JobRecord): Promise<number> {
    this.#open("job.record.create");
    return this.#server.records.create(
      "job.record.create",
      record.id,
      this.#fitting("job.record.create", record),
    );
  }

  async getRecord(id: string): Promise<RecordFound | undefined> {
    this.#open("job.record.get");
    return storedRecord(this.#server, "job.record.get", id);
  }

  async updateRecord(record: JobRecord, revision: number): Promise<number> {
    this.#open("job.record.update");
    return this.#server.records.update(
      "job.record.update",
      record.id,
      this.#fitting("job.record.update", record),
      revision,
    );
  }

  /** The record as stored, refused over the server's max payload as NATS refuses it. */
  #fitting(operation: string, record: JobRecord): string {
    const body = encodeRecord(record);
    this.#server.checkPayload(operation, body, "");
    return body;
  }

  async deleteRecord(id: string, revision: number): Promise<void> {
    this.#open("job.record.delete");
    this.#server.records.delete("job.record.delete", id, revision);
  }

  async listRecords(): Promise<JobRecord[]> {
    this.#open("job.record.list");
    return this.#server.records.live().map((entry) => decodeRecord(entry.value as string));
  }

  /**
   * As on NATS: entries in the order of their last write (revisions are the
   * stream's sequences), delete markers read and skipped, at most `maxScan`
   * read; `next` only when something follows the page. Costs a pass over
   * the bucket here: the memory broker holds what one process can.
   */
  async listRecordsPage(query: RecordsPageQuery): Promise<RecordsPage> {
    this.#open("job.record.page");
    const maxScan = query.maxScan ?? scanBound(query.limit);
    const entries = this.#server.records.writtenAfter(query.after ?? 0);
    const records: JobRecord[] = [];
    const unreadable: UnreadableRecord[] = [];
    const pick = recordPicker(query, unreadable);
    const page = (next?: number): RecordsPage => ({
      records,
      store: incarnationOf(this.#server.records),
      ...(next === undefined ? {} : { next }),
      ...(unreadable.length === 0 ? {} : { unreadable }),
    });
    let last = query.after ?? 0;
    for (const [read, entry] of entries.entries()) {
      if (records.length === query.limit || read === maxScan) return page(last);
      last = entry.revision;
      if (entry.value === undefined) continue;
      const record = pick(entry.key, entry.value);
      if (record !== undefined) records.push(record);
    }
    return page();
  }

  /**
   * Every record written from now on, in order and asynchronously, as a KV
   * watch delivers them. While a promise `onRecord` returned is pending,
   * writes wait in memory (every revision: the records live in memory anyway).
   */
  async watchRecordChanges(
    onRecord: (record: JobRecord, revision: number) => void | Promise<void>,
    signal: AbortSignal,
    onWatching?: (restarted: boolean) => void,
  ): Promise<void> {
    this.#open("job.record.changes");
    const watching = this.#watches.link(signal);
    const stop = watching.signal;
    if (stop.aborted) {
      this.#watches.unlink(watching);
      return;
    }
    const written: { readonly value: string; readonly revision: number }[] = [];
    let wake: (() => void) | undefined;
    const stopped = whenAborted(stop);
    const unwatch = this.#server.records.watch((entry) => {
      if (entry.value === undefined) return; // a delete is not a record, as on NATS
      written.push({ value: entry.value, revision: entry.revision });
      wake?.();
    });
    // The memory server's store is never made again.
    onWatching?.(false);
    try {
      let head = 0;
      while (!stop.aborted) {
        const entry = written[head];
        if (entry === undefined) {
          written.length = head = 0;
          await Promise.race([new Promise<void>((resolve) => (wake = resolve)), stopped]);
          wake = undefined;
          continue;
        }
        head++;
        try {
          const room = onRecord(decodeRecord(entry.value), entry.revision);
          if (room) await Promise.race([room, stopped]);
        } catch {
          // A record that cannot be read, or a throwing listener, loses that record only (as on NATS).
        }
      }
    } finally {
      unwatch();
      this.#watches.unlink(watching);
    }
  }
}
