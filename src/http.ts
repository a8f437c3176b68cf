import { BearerTokens } from "./adapters/http/bearer-tokens.ts";
import { createHttpApp, type JobView } from "./adapters/http/http-app.ts";
import { openApiDocument } from "./adapters/http/openapi.ts";
import { ReceiptSigner } from "./adapters/http/receipts.ts";
import { TaskLeases } from "./adapters/http/task-leases.ts";
import { NatsTaskLeasing } from "./adapters/nats/task-leasing.ts";
import { InvalidArgument } from "./errors.ts";
import { childLogger } from "./logger.ts";
import { rejectUnknownKeys } from "./options.ts";
import { jetstreamOf, partsOf, type Runtime } from "./runtime.ts";

export interface HttpApiOptions {
  /** `{ "<token>": "<worker identity>" }`: who may call, and the name logged with their reservations and results. */
  readonly tokens: Readonly<Record<string, string>>;
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
}

export interface HttpApi {
  /** The Fetch-API handler: mount it in any server (Hono, Node via @hono/node-server, Bun, Deno…). */
  fetch(request: Request): Promise<Response>;
  /** The OpenAPI 3.1 document (also served at `GET /openapi.json`). */
  readonly openapi: object;
}

const optionKeys = ["tokens", "receiptSecret", "maxBatchSize", "maxBodyBytes"] as const;
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
 * The HTTP pull API for workers that cannot reach NATS (see DESIGN.md, "The
 * HTTP pull API"): `POST /jobs/:id/tasks`, `POST /jobs/:id/results`,
 * `POST /jobs/:id/heartbeat`, `POST /queues/:queue/tasks`, `GET /jobs`,
 * `GET /jobs/:id`, `GET /healthz`, `GET /openapi.json`. Same lease contract
 * as native workers. Throws `InvalidArgument` for bad options.
 */
export const createHttpApi = (rt: Runtime, options: HttpApiOptions): HttpApi => {
  const parts = partsOf(rt);
  const { core, jobs } = parts;
  const broker = jetstreamOf(rt);
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
  const log = childLogger(core.logger, { actor: "http" });
  const leasing = new NatsTaskLeasing(core, broker);
  const leases = new TaskLeases(
    {
      getRecord: (id) => broker.getRecord(id),
      listRecords: () => broker.listRecords(),
      fetchTasks: (jobId, max) => leasing.fetchTasks(jobId, max),
      settleLeases: (settles) => leasing.settleLeases(settles),
      publishResults: (jobId, body, msgId) => broker.publishResults(jobId, body, msgId),
      isDeliveryOf: (reply, jobId) => leasing.isDeliveryOf(reply, jobId),
      storeDeadLetter: async ({ jobId, index, reply, error, deliveries }) => {
        const payload = await leasing.taskPayload(reply);
        await parts.broker.storeDeadLetter(
          { jobId, index, payload, error, deliveries, at: Date.now(), source: "worker" },
          `deadh.${jobId}.${index}.${deliveries}`,
        );
      },
    },
    { signer: new ReceiptSigner(secret), log },
  );
  const app = createHttpApp({
    leases,
    tokens,
    log,
    maxBatchSize,
    maxResults: maxResultsPerRequest,
    maxBodyBytes,
    listJobs: (filter) => jobs.list(filter),
    getJob: async (id): Promise<JobView | undefined> => {
      const found = await broker.getRecord(id);
      if (!found) return undefined;
      const { record } = found;
      if (record.status === "queuing") {
        // Being submitted (maybe by another process): read it, do not supervise it.
        return { ...record, ...record.counts, throughput: null, etaMs: null, reason: record.reason ?? null };
      }
      // Supervised here from now on (live counts and ETA); a finished job is just read back.
      return (await jobs.get(id))?.snapshot();
    },
    connectionState: () => rt.connection.state,
  });
  return {
    fetch: async (request) => app.fetch(request),
    openapi: openApiDocument({ maxBatchSize, maxResults: maxResultsPerRequest, maxBodyBytes }),
  };
};
