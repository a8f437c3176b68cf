/**
 * Listing jobs a page at a time: 100,000 job records written straight into
 * a fresh jobs bucket (valid v1 records, pipelined puts, 10 queues, mixed
 * statuses), then `rt.jobs.list({ limit: 100 })` timed: the first page,
 * pages from random cursors, and the same with a queue filter (1 record in
 * 10 matches); each over `calls` calls. The consumers on the bucket's stream
 * are counted before and after (a page must leave none). The old way, one
 * full `listRecords()` (every record read and decoded), is timed once for
 * comparison.
 *
 * The runtime is a submitter only: a supervisor's takeover and an admin's
 * reaper list every record in the background, which would be timed too.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { brokerNames } from "../src/adapters/names.ts";
import { partsOf } from "../src/api/runtime.ts";
import { createRuntime } from "../src/index.ts";
import type { JobRecord, JobStatus } from "../src/kernel/job-record.ts";
import { encodeRecord } from "../src/kernel/job-record-codec.ts";
import { decodeCursor, encodeCursor, filterTag } from "../src/kernel/list-page.ts";
import { defaultSettings } from "../test/harness/finished-records.ts";
import { silent } from "./jetstate-e2e.ts";
import { median, round } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

export interface ListTiming {
  readonly calls: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly maxMs: number;
  /** Jobs per page, median (a filtered page may be cut by the read bound). */
  readonly jobsPerPage: number;
}

export interface ListResult {
  readonly records: number;
  readonly writeSeconds: number;
  readonly firstPage: ListTiming;
  readonly randomPages: ListTiming;
  readonly firstPageQueue: ListTiming;
  readonly randomPagesQueue: ListTiming;
  /** One `listRecords()` of every record: the cost of `list()` before pages. */
  readonly fullScanMs: number;
  readonly consumersBefore: number;
  readonly consumersAfter: number;
}

const statuses: JobStatus[] = ["running", "succeeded", "failed", "stalled"];

const recordFor = (n: number, now: number): JobRecord => ({
  v: 1,
  id: `j${n.toString(36).padStart(8, "0")}`,
  queue: `q${n % 10}`,
  status: statuses[n % statuses.length] as JobStatus,
  phase: "committed",
  total: 100,
  submitId: `s${n}`,
  settings: defaultSettings,
  counts: { done: n % 100, failed: 0, dead: 0 },
  createdAt: now,
  updatedAt: now,
  commitDeadline: now + 30_000,
});

/** KV puts of every record, `window` publishes awaited at a time (a KV put is a publish to `$KV.<bucket>.<key>`). */
const writeRecords = async (nc: NatsConnection, bucket: string, count: number, window = 1000) => {
  const js = jetstream(nc);
  const now = Date.now();
  for (let from = 0; from < count; from += window) {
    const puts: Promise<unknown>[] = [];
    for (let n = from; n < Math.min(count, from + window); n++) {
      const record = recordFor(n, now);
      puts.push(js.publish(`$KV.${bucket}.${record.id}`, encodeRecord(record)));
    }
    await Promise.all(puts);
  }
};

const timeCalls = async (calls: number, call: (k: number) => Promise<number>): Promise<ListTiming> => {
  const ms: number[] = [];
  const sizes: number[] = [];
  for (let k = 0; k < calls; k++) {
    const started = performance.now();
    sizes.push(await call(k));
    ms.push(performance.now() - started);
  }
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? Number.NaN;
  return {
    calls,
    p50Ms: round(at(0.5), 1),
    p90Ms: round(at(0.9), 1),
    maxMs: round(sorted.at(-1) ?? Number.NaN, 1),
    jobsPerPage: median(sizes),
  };
};

export async function measureList(
  url: string,
  options: { records: number; calls: number },
  log: (line: string) => void,
): Promise<ListResult> {
  const prefix = uniqueName("list", 0);
  const rt = await createRuntime({
    servers: url,
    logger: silent,
    prefix,
    roles: ["submitter"],
    name: "bench-list",
  });
  const nc = await connect({ servers: url });
  try {
    await rt.jobs.list(); // makes the bucket
    const bucket = brokerNames(prefix).jobsBucket;
    const stream = `KV_${bucket}`;
    const jsm = await jetstreamManager(nc);
    const consumers = async () => (await jsm.consumers.list(stream).next()).length;
    const written = performance.now();
    await writeRecords(nc, bucket, options.records);
    const writeSeconds = round((performance.now() - written) / 1000, 2);
    const lastSeq = (await jsm.streams.info(stream)).state.last_seq;
    log(`list: ${options.records} records written in ${writeSeconds} s`);
    // The runtime's record watch reads every write: let it catch up before anything is timed.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const consumersBefore = await consumers();
    // A cursor names its store and filter: the store's tag is read off a first page's.
    const store = decodeCursor((await rt.jobs.list({ limit: 1 })).next)?.store ?? "";
    const randomCursor = (queue?: string) =>
      encodeCursor({
        position: Math.floor(Math.random() * lastSeq),
        store,
        filter: filterTag(queue === undefined ? {} : { queues: [queue] }),
      });
    const page = async (query: Parameters<typeof rt.jobs.list>[0]) => (await rt.jobs.list(query)).jobs.length;
    await page({ limit: 100 }); // warm-up
    const firstPage = await timeCalls(options.calls, () => page({ limit: 100 }));
    const randomPages = await timeCalls(options.calls, () => page({ limit: 100, cursor: randomCursor() }));
    const firstPageQueue = await timeCalls(options.calls, () => page({ limit: 100, queue: "q3" }));
    const randomPagesQueue = await timeCalls(options.calls, () =>
      page({ limit: 100, queue: "q3", cursor: randomCursor("q3") }),
    );
    const consumersAfter = await consumers();
    const scanned = performance.now();
    const all = await partsOf(rt).broker.listRecords();
    const fullScanMs = round(performance.now() - scanned, 0);
    if (all.length !== options.records)
      throw new Error(`list: listRecords() read ${all.length} of ${options.records} records`);
    const result = {
      records: options.records,
      writeSeconds,
      firstPage,
      randomPages,
      firstPageQueue,
      randomPagesQueue,
      fullScanMs,
      consumersBefore,
      consumersAfter,
    };
    log(`list: ${JSON.stringify(result)}`);
    return result;
  } finally {
    await nc.close();
    await rt.stop();
  }
}
