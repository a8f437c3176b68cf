import {
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { RevisionConflict } from "../../kernel/errors.ts";
import { parseScheduleRecord, type ScheduleRecord } from "../../kernel/schedule-record.ts";
import type { ScheduleStore, StoredSchedule } from "../schedule-store.ts";
import { ServerClockReading, scanBucketEntries } from "./bucket-reads.ts";
import type { ClientSetups } from "./client-setups.ts";
import type { NatsContext } from "./nats-context.ts";
import { ensureBucket, isNotFound, type Replicas } from "./streams.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A CAS loss (JetStream "wrong last sequence") is the store's `RevisionConflict`; anything else as it is. */
const casLost = (error: unknown, id: string, operation: string): unknown =>
  error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamWrongLastSequence
    ? new RevisionConflict({ key: id, message: `schedule ${id}: ${operation} lost a CAS race` })
    : error;

const entryOf = (id: string, entry: Awaited<ReturnType<KV["get"]>>): StoredSchedule | undefined =>
  // A deleted or purged key still returns an entry, marked by its operation.
  entry === null || entry.operation !== "PUT"
    ? undefined
    : {
        record: parseScheduleRecord(id, JSON.parse(decoder.decode(entry.value))),
        revision: entry.revision,
        storedAt: entry.created.getTime(),
      };

/**
 * Schedules in a KV bucket (`<prefix>_schedules`, history 1: only the latest
 * record matters), over the runtime's supervised connection: every call has
 * a deadline and retries transient errors (a `RevisionConflict` is
 * permanent: the caller re-reads). The bucket is made by the first write
 * (and by `provision`), and again after an operation found it missing
 * (`setups`, the broker's); reads of a bucket not made yet find nothing and
 * make nothing, so a runtime's scheduler costs one stream info a pass while
 * nobody has a schedule.
 */
export const natsScheduleStore = (
  core: NatsContext,
  shared: { readonly setups: ClientSetups; readonly replicas: Replicas },
  bucketName: string,
): ScheduleStore & { provision(): Promise<void> } => {
  // A manager of its own, not the broker's handles: those set up the job streams too, which a
  // submitter may not create (an admin provisions them), and schedules need none of them.
  const managers = shared.setups.once<JetStreamManager>();
  const jsmOf = (nc: NatsConnection) => managers(nc, () => jetstreamManager(nc));
  const buckets = shared.setups.once<KV>();
  const bucket = (nc: NatsConnection): Promise<KV> =>
    buckets(nc, async () => ensureBucket(nc, await jsmOf(nc), bucketName, { history: 1 }, shared.replicas));
  /** The bucket if it exists; undefined (nothing made) if not. */
  const existing = async (nc: NatsConnection): Promise<KV | undefined> => {
    try {
      await (await jsmOf(nc)).streams.info(`KV_${bucketName}`);
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    return bucket(nc);
  };
  const run = <A>(
    name: string,
    id: string,
    op: (kv: KV, nc: NatsConnection) => Promise<A>,
    orElse?: () => A,
  ): Promise<A> =>
    shared.setups.run(core, name, async (nc) => {
      try {
        const kv = orElse ? await existing(nc) : await bucket(nc);
        return kv ? await op(kv, nc) : (orElse as () => A)();
      } catch (error) {
        throw casLost(error, id, name);
      }
    });
  /**
   * The last list read, and the bucket's last message then: its sequence and its time (a
   * bucket made again, a server back empty, starts its sequences over).
   */
  let listed:
    | {
        stream: string;
        seq: number;
        time: string;
        schedules: StoredSchedule[];
        bad: Array<{ id: string; error: unknown }>;
      }
    | undefined;
  /** The server's clock as the last listing read it. */
  const clock = new ServerClockReading();
  return {
    // Checked at each use, not only when listing: a host that slept (its monotonic clock stood
    // still) took the reading as it was until its scheduler's next listing, and an upsert then
    // counted a right clock ahead by the sleep and stamped its since that far back.
    serverTime: () => clock.serverTime(),
    provision: () => run("schedules.provision", "*", async () => undefined),
    read: (id) =>
      run(
        "schedules.read",
        id,
        async (kv) => entryOf(id, await kv.get(id)),
        () => undefined,
      ),
    // One pass over the bucket (its consumer deleted at the end), and only when it changed since
    // the last: a scheduler reads the schedules every second, and most seconds nothing changed.
    // The pass's consumer's creation stamp is the server's clock the scheduler judges ticks by.
    list: (unreadable) =>
      run(
        "schedules.list",
        "*",
        async (_kv, nc) => {
          const jsm = await jsmOf(nc);
          const stream = `KV_${bucketName}`;
          const lastMessage = await jsm.streams.getMessage(stream, { last_by_subj: `$KV.${bucketName}.>` });
          const last = lastMessage?.seq ?? 0;
          const time = lastMessage?.timestamp ?? "";
          if (
            listed?.stream === stream &&
            listed.seq === last &&
            listed.time === time &&
            listed.bad.length === 0 &&
            // Listed again too when its reading of the server's clock may be off (none: no schedule).
            (clock.taken ? clock.serverTime() !== undefined : listed.schedules.length === 0)
          )
            return listed.schedules;
          const schedules: StoredSchedule[] = [];
          const bad: Array<{ id: string; error: unknown }> = [];
          const entries = await scanBucketEntries(jetstream(nc), jsm, bucketName, ">", clock.take);
          for (const [id, entry] of entries) {
            if (entry.value === undefined) continue;
            try {
              schedules.push({
                record: parseScheduleRecord(id, JSON.parse(entry.value)),
                revision: entry.revision,
                storedAt: entry.storedAt,
              });
            } catch (error) {
              bad.push({ id, error });
            }
          }
          for (const { id, error } of bad) {
            if (!unreadable) throw error;
            unreadable(id, error);
          }
          listed = { stream, seq: last, time, schedules, bad };
          return schedules;
        },
        () => [],
      ),
    create: (record: ScheduleRecord) =>
      run("schedules.create", record.id, (kv) =>
        kv.create(record.id, encoder.encode(JSON.stringify(record))),
      ),
    update: (record: ScheduleRecord, revision: number) =>
      run("schedules.update", record.id, (kv) =>
        kv.update(record.id, encoder.encode(JSON.stringify(record)), revision),
      ),
    remove: (id, revision) =>
      run("schedules.remove", id, async (kv) => {
        const entry = await kv.get(id);
        if (entry === null || entry.operation !== "PUT") return false;
        await kv.delete(id, { previousSeq: revision ?? entry.revision });
        return true;
      }),
  };
};
