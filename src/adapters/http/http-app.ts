import { type Context, Hono } from "hono";
import { InvalidArgument, isTransient, RuntimeStopped } from "../../kernel/errors.ts";
import type { JobRecord, JobStatus } from "../../kernel/job-record.ts";
import { decodeCursor, defaultPageLimit, maxPageLimit, readListing } from "../../kernel/list-page.ts";
import type { Logger } from "../../kernel/logger.ts";
import { subjectTokenPattern } from "../../kernel/validation.ts";
import type { RecordsPage, RecordsPageQuery } from "../job-records.ts";
import type { BearerTokens } from "./bearer-tokens.ts";
import type {
  HealthBody,
  HeartbeatOutcomeBody,
  ItemOutcomeBody,
  JobBody,
  JobListBody,
  ReservedTaskBody,
} from "./bodies.ts";
import { badRequest, ErrorCode, HttpError } from "./http-errors.ts";
import { openApiDocument } from "./openapi.ts";
import { parseHeartbeat, parseReserve, parseResults, readJson } from "./request-bodies.ts";
import type { HeartbeatOutcome, ItemOutcome, ReservedTask, TaskLeases } from "./task-leases.ts";
import { authenticateWith, callerWith, type ScopedEnv } from "./token-auth.ts";

/** A job as `GET /jobs/:id` shows it. */
export interface JobView {
  readonly id: string;
  readonly queue: string;
  readonly status: JobStatus;
  readonly total: number;
  readonly done: number;
  readonly failed: number;
  readonly dead: number;
  readonly throughput: number | null;
  readonly etaMs: number | null;
  readonly reason: string | null;
}

export interface HttpAppDeps {
  readonly leases: TaskLeases;
  readonly tokens: BearerTokens;
  readonly log: Logger;
  readonly maxBatchSize: number;
  readonly maxResults: number;
  readonly maxBodyBytes: number;
  /** One page of job records (the broker's `listRecordsPage`). */
  listJobs(query: RecordsPageQuery): Promise<RecordsPage>;
  /** Undefined for an unknown job, or one of a queue `visible` says no to (checked before anything else). */
  getJob(id: string, visible: (queue: string) => boolean): Promise<JobView | undefined>;
  /** The NATS connection's state; `connected` is healthy. */
  connectionState(): string;
}

type Env = ScopedEnv;

const namePattern = subjectTokenPattern;
const statuses = ["queuing", "running", "stalled", "succeeded", "failed"] as const;

/**
 * The routes of the HTTP pull API as a Hono app (a Fetch-API handler). Auth
 * first, then the body, then receipts, then the job: a request is refused
 * before anything touches NATS.
 */
export const createHttpApp = (deps: HttpAppDeps): Hono<Env> => {
  const app = new Hono<Env>();
  const openapi = openApiDocument(deps);

  const authenticate = authenticateWith(deps.tokens);
  app.use("/jobs", authenticate);
  app.use("/jobs/*", authenticate);
  app.use("/queues/*", authenticate);

  app.get("/healthz", (c) => {
    const connection = deps.connectionState();
    const ok = connection === "connected" || connection === "memory";
    const body: HealthBody = { status: ok ? "ok" : "unavailable", connection };
    return c.json(body, ok ? 200 : 503);
  });
  app.get("/openapi.json", (c) => c.json(openapi));

  app.get("/jobs", async (c) => {
    const scope = callerWith(c, "read");
    const queue = c.req.query("queue");
    const status = c.req.query("status");
    const limitText = c.req.query("limit") ?? String(defaultPageLimit);
    if (queue !== undefined && !namePattern.test(queue))
      throw badRequest("queue", "is not a valid queue name");
    if (queue !== undefined && !scope.allows(queue))
      throw new HttpError(403, ErrorCode.forbidden, `this token may not read queue ${queue}`);
    if (status !== undefined && status !== "active" && !(statuses as readonly string[]).includes(status)) {
      throw badRequest("status", `must be one of active, ${statuses.join(", ")}`);
    }
    const limit = /^\d{1,4}$/.test(limitText) ? Number(limitText) : Number.NaN;
    if (!(limit >= 1 && limit <= maxPageLimit))
      throw badRequest("limit", `must be an integer between 1 and ${maxPageLimit}`);
    const cursor = c.req.query("cursor");
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    if (cursor !== undefined && after === undefined)
      throw badRequest("cursor", "is not a cursor this service gave (pass the `next` of the page before)");
    // The token's queues are the filter when it names none: a page holds only jobs it may see.
    const queues = queue === undefined ? scope.queues && [...scope.queues] : [queue];
    const wanted: JobStatus[] | undefined =
      status === undefined ? undefined : status === "active" ? ["running", "stalled"] : [status as JobStatus];
    const { page, next } = await readListing(
      deps.listJobs,
      {
        limit,
        ...(queues === undefined ? {} : { queues }),
        ...(wanted === undefined ? {} : { statuses: wanted }),
      },
      after,
      (why) => badRequest("cursor", why),
    );
    const body: JobListBody = {
      jobs: page.records.filter((r) => scope.allows(r.queue)).map(jobSummary),
      ...(next === undefined ? {} : { next }),
    };
    return c.json(body);
  });

  app.get("/jobs/:id", async (c) => {
    const scope = callerWith(c, "read");
    const job = await deps.getJob(jobIdParam(c), scope.allows);
    if (!job) throw new HttpError(404, ErrorCode.jobNotFound, `no job ${c.req.param("id")}`);
    return c.json(jobBody(job));
  });

  app.post("/jobs/:id/tasks", async (c) => {
    const scope = callerWith(c, "worker");
    const body = parseReserve(await readJson(c.req.raw, deps.maxBodyBytes), deps.maxBatchSize);
    const tasks = await deps.leases.reserve(jobIdParam(c), body.batchSize, scope, c.req.raw.signal);
    return c.json({ tasks: tasks.map(reservedTask) });
  });

  app.post("/queues/:queue/tasks", async (c) => {
    const queue = c.req.param("queue");
    const scope = callerWith(c, "worker");
    if (!namePattern.test(queue)) throw badRequest("queue", "is not a valid queue name");
    if (!scope.allows(queue))
      throw new HttpError(403, ErrorCode.forbidden, `this token may not use queue ${queue}`);
    const body = parseReserve(await readJson(c.req.raw, deps.maxBodyBytes), deps.maxBatchSize);
    const tasks = await deps.leases.reserveFromQueue(queue, body.batchSize, scope, c.req.raw.signal);
    return c.json({ tasks: tasks.map(reservedTask) });
  });

  app.post("/jobs/:id/results", async (c) => {
    const scope = callerWith(c, "worker");
    const items = parseResults(await readJson(c.req.raw, deps.maxBodyBytes), deps.maxResults);
    const outcomes = (await deps.leases.submitResults(jobIdParam(c), items, scope)).map(itemOutcome);
    if (
      outcomes.some((o) => o.status === "conflict") &&
      outcomes.every((o) => o.status === "conflict" || o.status === "expired" || o.duplicate)
    ) {
      throw new HttpError(
        409,
        ErrorCode.alreadyAnswered,
        "every delivery in this request was answered before (differently, or its lease expired); nothing was done",
        { results: outcomes },
      );
    }
    if (outcomes.every((o) => o.status === "expired")) {
      throw new HttpError(
        410,
        ErrorCode.leaseExpired,
        "every lease in this request had expired; nothing was done",
        {
          results: outcomes,
        },
      );
    }
    return c.json({ results: outcomes });
  });

  app.post("/jobs/:id/heartbeat", async (c) => {
    const scope = callerWith(c, "worker");
    const receipts = parseHeartbeat(await readJson(c.req.raw, deps.maxBodyBytes), deps.maxResults);
    const outcomes = (await deps.leases.heartbeat(jobIdParam(c), receipts, scope)).map(heartbeatOutcome);
    if (outcomes.every((o) => o.status === "expired")) {
      throw new HttpError(410, ErrorCode.leaseExpired, "every lease in this request had expired", {
        receipts: outcomes,
      });
    }
    return c.json({ receipts: outcomes });
  });

  // A known path with another method: 405 with Allow, not 404.
  const allowed: Record<string, string> = {
    "/healthz": "GET, HEAD",
    "/openapi.json": "GET, HEAD",
    "/jobs": "GET, HEAD",
    "/jobs/:id": "GET, HEAD",
    "/jobs/:id/tasks": "POST",
    "/jobs/:id/results": "POST",
    "/jobs/:id/heartbeat": "POST",
    "/queues/:queue/tasks": "POST",
  };
  for (const [path, methods] of Object.entries(allowed)) {
    app.all(path, (c) => {
      c.header("Allow", methods);
      throw new HttpError(
        405,
        ErrorCode.methodNotAllowed,
        `${c.req.method} is not allowed here; use ${methods}`,
      );
    });
  }

  app.notFound((c) =>
    c.json(new HttpError(404, ErrorCode.notFound, `no route ${c.req.method} ${c.req.path}`).body(), 404),
  );

  app.onError((error, c) => {
    const known = toHttpError(error);
    if (known.status >= 500) {
      if (known.code === ErrorCode.internal)
        deps.log.error({ err: error, path: c.req.path }, "request failed");
      else deps.log.warn({ err: error, path: c.req.path }, "request failed; NATS unavailable");
      c.header("Retry-After", "1");
    }
    if (known.status === 401) c.header("WWW-Authenticate", 'Bearer realm="jetstate"');
    if (known.status === 429) c.header("Retry-After", "1");
    return c.json(known.body(), known.status);
  });

  return app;
};

export const toHttpError = (error: unknown): HttpError => {
  if (error instanceof HttpError) return error;
  if (error instanceof InvalidArgument) return badRequest(error.field ?? "request", error.message);
  if (error instanceof RuntimeStopped)
    return new HttpError(503, ErrorCode.unavailable, "the service is stopping");
  if (isTransient(error)) return new HttpError(503, ErrorCode.unavailable, "NATS is unavailable; try again");
  return new HttpError(500, ErrorCode.internal, "internal error");
};

/** A malformed id names no job: 404, like an unknown one. */
const jobIdParam = (c: Context<Env>): string => {
  const id = c.req.param("id") ?? "";
  if (!namePattern.test(id)) throw new HttpError(404, ErrorCode.jobNotFound, "no such job");
  return id;
};

const jobBody = (job: JobView): JobBody => ({
  id: job.id,
  queue: job.queue,
  status: job.status,
  total: job.total,
  done: job.done,
  failed: job.failed,
  dead: job.dead,
  throughput: job.throughput,
  eta_ms: job.etaMs,
  reason: job.reason,
});

const reservedTask = (t: ReservedTask): ReservedTaskBody => ({
  id: t.id,
  job_id: t.jobId,
  index: t.index,
  attempt: t.attempt,
  payload: t.payload,
  receipt: t.receipt,
  lease_ms: t.leaseMs,
});

const itemOutcome = (o: ItemOutcome): ItemOutcomeBody => ({
  id: o.id,
  status: o.status,
  ...(o.duplicate ? { duplicate: true } : {}),
  ...(o.answered === undefined ? {} : { answered: o.answered }),
  ...(o.retryInMs === undefined ? {} : { retry_in_ms: o.retryInMs }),
});

const heartbeatOutcome = (o: HeartbeatOutcome): HeartbeatOutcomeBody =>
  o.status === "extended"
    ? { id: o.id, status: o.status, receipt: o.receipt, lease_ms: o.leaseMs }
    : { id: o.id, status: o.status };

const jobSummary = (r: JobRecord): JobListBody["jobs"][number] => ({
  id: r.id,
  queue: r.queue,
  status: r.status,
  total: r.total,
  done: r.counts.done,
  failed: r.counts.failed,
  dead: r.counts.dead,
  created_at: r.createdAt,
  updated_at: r.updatedAt,
});
