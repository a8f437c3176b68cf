import { createHash } from "node:crypto";
import type { Broker } from "../adapters/broker.ts";
import { BearerTokens } from "../adapters/http/bearer-tokens.ts";
import { createHttpApp, type JobView } from "../adapters/http/http-app.ts";
import { openApiDocument } from "../adapters/http/openapi.ts";
import { ReceiptSigner } from "../adapters/http/receipts.ts";
import { TaskLeases } from "../adapters/http/task-leases.ts";
import type { TokenConfig } from "../adapters/http/token-scopes.ts";
import { shownRecord } from "../effects/finalize-job.ts";
import { monotonicNow } from "../kernel/clock.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import { type JobRecord, maxCounts, takesTasks } from "../kernel/job-record.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import { rejectUnknownKeys } from "../kernel/validation.ts";
import { leaseLimits, queueSettingsOf } from "./lease-limits.ts";
import { leasedRecords } from "./leased-records.ts";
import { partsOf, type Runtime } from "./runtime.ts";
import { unreadableListed } from "./unreadable-listed.ts";

export type { TokenConfig, TokenRole, TokenScopeOptions } from "../adapters/http/token-scopes.ts";

export interface HttpApiOptions {
  /**
   * Who may call: `{ "<token>": { identity, role, queues } }`. `identity` is
   * the name logged with the token's reservations and results (and bound
   * into its receipts); `role` is `"worker"` (reserve, answer, heartbeat) or
   * `"read"` (list and show jobs); `queues` the queue names it may use, or
   * `"*"`. A bare identity (`{ "<token>": "gpu-box-7" }`) is a worker on every
   * queue.
   */
  readonly tokens: Readonly<Record<string, TokenConfig>>;
  /**
   * Key that signs receipts (≥ 32 bytes). Every process serving the API for
   * the same jobs must share it; default: random, so receipts are only
   * accepted by the API object that issued them.
   */
  readonly receiptSecret?: string | Uint8Array;
  /**
   * Upper bound of `batch_size`.
   * @defaultValue 100
   */
  readonly maxBatchSize?: number;
  /**
   * Upper bound of a request body in bytes.
   * @defaultValue 1 MiB
   */
  readonly maxBodyBytes?: number;
  /**
   * Open leases (reserved, not answered, not expired) one token may hold
   * through this API instance; a reservation past it is answered 429.
   * @defaultValue 100
   */
  readonly maxLeasesPerToken?: number;
}

export interface HttpApi {
  /** The Fetch-API handler: mount it in any server (Hono, Node via @hono/node-server, Bun, Deno…). */
  fetch(request: Request): Promise<Response>;
  /** The OpenAPI 3.1 document (also served at `GET /openapi.json`). */
  readonly openapi: object;
}

const optionKeys = ["tokens", "receiptSecret", "maxBatchSize", "maxBodyBytes", "maxLeasesPerToken"] as const;
/** Results and heartbeats of one request: a worker answers what it reserved, maybe several batches at once. */
const maxResultsPerRequest = 1000;

const boundedInt = (value: unknown, field: string, fallback: number, min: number, max: number): number => {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgument({ message: `${field}: must be an integer between ${min} and ${max}`, field });
  }
  return value;
};

/**
 * The HTTP pull API for workers that cannot reach NATS (docs/architecture.md,
 * "The HTTP pull API"): `POST /jobs/:id/tasks`, `POST /jobs/:id/results`,
 * `POST /jobs/:id/heartbeat`, `POST /queues/:queue/tasks`, `GET /jobs`,
 * `GET /jobs/:id`, `GET /healthz`, `GET /openapi.json`. Same lease contract
 * as native workers, on either broker (NATS, or the memory broker of
 * `jetstate-jobs/testing`). Throws `InvalidArgument` for bad options.
 *
 * @example
 * const api = createHttpApi(rt, {
 *   tokens: { [process.env.WORKER_TOKEN!]: { identity: "gpu-box-7", role: "worker", queues: ["detect"] } },
 * });
 * serve({ fetch: api.fetch, port: 8080 }); // @hono/node-server, or any Fetch-API server
 */
/**
 * The jobs HTTP workers may reserve from: those holding a supervision lease
 * (the leases bucket keeps one key per job not over), each record read once
 * while it runs and kept until its lease goes. It was every record kept, read
 * again every second while HTTP workers polled: with 100,000 kept, 1.4 s a
 * listing. A record not yet committed, or not read (leased-records.ts: one
 * this version cannot decode was a 500 for every queue), is read again on
 * the next listing.
 */
const activeJobsOf = (broker: Broker, log: Logger): (() => Promise<JobRecord[]>) => {
  const known = new Map<string, JobRecord>();
  const records = leasedRecords(broker, log, "its tasks are not reserved through the HTTP API");
  return async () => {
    const leased = new Set((await broker.leases.list()).map((l) => l.jobId));
    for (const id of known.keys()) if (!leased.has(id)) known.delete(id);
    records.leased(leased);
    for (const record of await records.read([...leased].filter((id) => !known.has(id))))
      if (takesTasks(record)) known.set(record.id, record);
    return [...known.values()];
  };
};

/**
 * The longest round trip of a reading of the server's clock that receipts
 * are timed by for more than a second (receipt-clock.ts: a receipt's end
 * errs early by it, where the leasing instance does not).
 */
const receiptReadingMaxRoundTripMs = 100;

export const createHttpApi = (rt: Runtime, options: HttpApiOptions): HttpApi => {
  const parts = partsOf(rt);
  const { core, jobs, broker } = parts;
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgument({ message: "options: must be an object", field: "options" });
  }
  rejectUnknownKeys(options, optionKeys, "");
  const tokens = new BearerTokens(options.tokens);
  const secret = options.receiptSecret;
  if (
    secret !== undefined &&
    (typeof secret === "string" ? Buffer.byteLength(secret) : (secret.byteLength ?? 0)) < 32
  ) {
    throw new InvalidArgument({
      message: "receiptSecret: must be at least 32 bytes",
      field: "receiptSecret",
    });
  }
  const maxBatchSize = boundedInt(options.maxBatchSize, "maxBatchSize", 100, 1, 10_000);
  const maxBodyBytes = boundedInt(options.maxBodyBytes, "maxBodyBytes", 1024 * 1024, 1024, 64 * 1024 * 1024);
  const maxLeasesPerToken = boundedInt(options.maxLeasesPerToken, "maxLeasesPerToken", 100, 1, 100_000);
  const log = childLogger(core.logger, { actor: "http" });
  const unreadable = unreadableListed(log, "it is left out of GET /jobs");
  const leasing = broker.taskLeasing;
  const settingsOf = queueSettingsOf(broker.queueControls, log);
  // The runtime's clock (its `clock` option), as every other lease of the runtime is timed.
  const now = () => core.clock.now();
  const leases = new TaskLeases(
    {
      getRecord: (id) => broker.getRecord(id),
      activeJobs: activeJobsOf(broker, log),
      isPaused: async (queue) => (await settingsOf(queue)).paused,
      limits: leaseLimits(broker.queueControls, settingsOf, log, now),
      publishResults: (queue, jobId, body, msgId) => broker.publishResults(queue, jobId, body, msgId),
      maxPayload: () => broker.maxPayload(),
      // A slow reading errs every receipt by its round trip: read again, shared, once a second at most.
      serverTime: () => broker.leases.readServerTime({ maxRoundTripMs: receiptReadingMaxRoundTripMs }),
      // Remote workers' answers count in the metrics as native workers' do (no duration: it ran elsewhere).
      answered: (queue, outcome, attempt) => {
        if (!core.telemetry.active) return;
        if (attempt > 1) core.telemetry.emit({ type: "task.redelivered", queue, attempt });
        core.telemetry.emit({ type: "task.answered", queue, outcome });
      },
      isDeliveryOf: (ref, job) => leasing.isDeliveryOf(ref, job),
      fetchTasks: (queue, jobId, max, pulling) => leasing.fetchTasks(queue, jobId, max, pulling),
      fetchLane: (queue, max, pulling) => leasing.fetchLane(queue, max, pulling),
      settle: (settles, notAfter) => leasing.settle(settles, notAfter),
      claimAnswer: (ref, digest) => leasing.claimAnswer(ref, digest),
      answerOf: (ref) => leasing.answerOf(ref),
      recordAnswer: (ref, answer, revision) => leasing.recordAnswer(ref, answer, revision),
      releaseAnswer: (ref, revision) => leasing.releaseAnswer(ref, revision),
      storeDeadLetter: async ({ queue, jobId, index, ref, error, deliveries, submit }) => {
        // It names its task's message, as a native worker's does: a redrive deletes it first, in
        // case its term was lost (its advisory's dead answer would count as the copy's).
        const { payload, seq } = await leasing.deliveredTask(ref);
        return broker.storeDeadLetter(
          {
            queue,
            jobId,
            index,
            payload,
            error,
            deliveries,
            at: Date.now(),
            source: "worker",
            taskSeq: seq,
            ...(submit === undefined ? {} : { submit }),
          },
          // Named by the delivery (its reference): a redriven copy that dies again is another letter.
          `deadh.${jobId}.${index}.${deliveries}.${createHash("sha256").update(ref).digest("base64url").slice(0, 16)}`,
        );
      },
    },
    {
      signer: new ReceiptSigner(secret),
      log,
      maxLeasesPerToken,
      now,
      monotonic: () => monotonicNow(core.clock),
    },
  );
  const app = createHttpApp({
    leases,
    tokens,
    log,
    maxBatchSize,
    maxResults: maxResultsPerRequest,
    maxBodyBytes,
    listJobs: async (query) => {
      const page = await broker.listRecordsPage(query);
      unreadable(page);
      return page;
    },
    getJob: async (id, visible): Promise<JobView | undefined> => {
      // A lane job whose commit is not written yet shows as running, as `rt.jobs.get()` has it.
      const found = await shownRecord(broker, id);
      if (!found || !visible(found.record.queue)) return undefined;
      const { record } = found;
      // Answered from the record: a request must not leave a job actor running here. A job
      // this runtime already watches (it submitted it) also has a live rate and ETA.
      const live = record.status === "queuing" ? undefined : jobs.watchedSnapshot(id);
      const counts = live ? maxCounts(live, record.counts) : record.counts;
      return {
        ...record,
        ...counts,
        throughput: live?.throughput ?? null,
        etaMs: live?.etaMs ?? null,
        reason: record.reason ?? null,
      };
    },
    // The memory broker has no connection to lose: healthy while the runtime runs.
    connectionState: () => (broker.kind === "memory" ? "memory" : rt.connection.state),
  });
  return {
    fetch: async (request) => app.fetch(request),
    openapi: openApiDocument({ maxBatchSize, maxResults: maxResultsPerRequest, maxBodyBytes }),
  };
};
