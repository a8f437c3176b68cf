import { createHash } from "node:crypto";
import { Schema } from "effect";
import { type Context, Hono } from "hono";
import type { Logger } from "../../kernel/logger.ts";
import { reasonWithSuffix } from "../../kernel/reason.ts";
import { LinkedControllers } from "../../kernel/signals.ts";
import { Label, number, subjectTokenPattern } from "../../kernel/validation.ts";
import type { BearerTokens } from "./bearer-tokens.ts";
import type { Chart } from "./dashboard-chart.ts";
import { dashboardPage } from "./dashboard-page.ts";
import { dashboardScript } from "./dashboard-script.ts";
import { type Emit, eventStream, type StreamSlots } from "./dashboard-stream.ts";
import { type JobView, toHttpError } from "./http-app.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import { decodeBody, readJson } from "./request-bodies.ts";
import { authenticateWith, callerWith, type ScopedEnv } from "./token-auth.ts";
import type { TokenScope } from "./token-scopes.ts";

/** A job as the dashboard shows it: its record, with this runtime's live rate and ETA when it watches it. */
export interface DashboardJob extends JobView {
  readonly createdAt: number;
  readonly updatedAt: number;
  /**
   * `submit({ priority })`: higher runs first on a busy worker. Absent for a
   * job the list only met through its events (they do not carry it).
   */
  readonly priority?: number;
  /** True when this runtime has the job's actor: its chart shows the full state, not the record's status. */
  readonly live: boolean;
}

/** A worker as presence lists it; only `queue` is read here (a token sees its queues' workers). */
interface DashboardWorker {
  readonly queue: string;
  readonly agent?: string;
}

/** An agent as presence lists it. */
interface DashboardAgent {
  readonly agentId: string;
}

interface DashboardDeadLetter {
  readonly index: number;
  readonly taskId: string;
  readonly error: string;
  readonly deliveries: number;
  readonly at: number;
  readonly source: string;
}

export interface DashboardDeps {
  readonly tokens: BearerTokens;
  readonly log: Logger;
  readonly charts: { readonly job: Chart; readonly connection: Chart };
  /** Every job listed of these queues (undefined: every queue), active first, then the most recent. */
  listJobs(queues: readonly string[] | undefined): Promise<DashboardJob[]>;
  getJob(id: string): Promise<DashboardJob | undefined>;
  deadLetters(id: string): Promise<DashboardDeadLetter[]>;
  cancel(id: string, reason: string): Promise<void>;
  redrive(id: string, tasks: readonly number[] | undefined): Promise<void>;
  workers(): Promise<readonly DashboardWorker[]>;
  agents(): Promise<readonly DashboardAgent[]>;
  /** The connection's state name and its actor's full state value. */
  connection(): { readonly state: string; readonly value: unknown };
  /** Job events of the queues `visible` allows and every connection transition, until `signal` aborts. */
  streamOverview(visible: (queue: string) => boolean, emit: Emit, signal: AbortSignal): Promise<void>;
  /** The job's transitions and progress, until `signal` aborts. */
  streamJob(job: DashboardJob, emit: Emit, signal: AbortSignal): Promise<void>;
  /** Aborts when the runtime or the dashboard stops: every open stream ends. */
  readonly stopping: AbortSignal;
  /** The streams open per identity (429 beyond the cap). */
  readonly streams: StreamSlots;
}

type Env = ScopedEnv;

const maxBodyBytes = 64 * 1024;
/** Jobs sent in an overview at most (the queue table counts them all). */
const maxListed = 200;
/**
 * The page's one script is allowed by its hash, not by `'unsafe-inline'`:
 * an injected script would not run. The hash is of the text between the
 * page's `<script>` tags, which is `dashboardScript` as it is.
 */
const contentSecurityPolicy = [
  "default-src 'self'",
  `script-src 'sha256-${createHash("sha256").update(dashboardScript).digest("base64")}'`,
  "style-src 'unsafe-inline'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "object-src 'none'",
].join("; ");
const CancelBody = Schema.Struct({ reason: Schema.optional(Label) });
const RedriveBody = Schema.Struct({
  tasks: Schema.optional(Schema.Array(number(0, 2 ** 31, { integer: true }))),
});

/**
 * The dashboard's routes (docs/architecture.md, "The dashboard"): the page
 * at `/` (no data in it, so no token), and under `/api/` the JSON and the
 * event streams it reads, behind the HTTP API's bearer tokens. `read` looks,
 * `operate` also cancels and redrives; a token's queues are all it sees.
 */
export const createDashboardApp = (deps: DashboardDeps): Hono<Env> => {
  const app = new Hono<Env>();

  app.use("/api/*", authenticateWith(deps.tokens));
  /** The job, if the token may see its queue: one of another queue is 404, like an unknown one. */
  const visibleJob = async (c: Context<Env>, scope: TokenScope): Promise<DashboardJob> => {
    const id = c.req.param("id") ?? "";
    const job = subjectTokenPattern.test(id) ? await deps.getJob(id) : undefined;
    if (!job || !scope.allows(job.queue)) throw new HttpError(404, ErrorCode.jobNotFound, `no job ${id}`);
    return job;
  };

  app.get("/", (c) => {
    c.header("content-security-policy", contentSecurityPolicy);
    c.header("x-content-type-options", "nosniff");
    return c.html(dashboardPage);
  });

  app.get("/api/charts", (c) => {
    callerWith(c, "read");
    return c.json(deps.charts);
  });

  app.get("/api/overview", async (c) => {
    const scope = callerWith(c, "read");
    const [all, allWorkers, allAgents] = await Promise.all([
      deps.listJobs(scope.queues && [...scope.queues]),
      deps.workers(),
      deps.agents(),
    ]);
    const workers = allWorkers.filter((w) => scope.allows(w.queue));
    // An agent is no queue's: a token limited to some queues sees those its queues' workers are bound to.
    const bound = new Set(workers.map((w) => w.agent));
    const agents = scope.queues ? allAgents.filter((a) => bound.has(a.agentId)) : allAgents;
    const jobs = all.filter((j) => scope.allows(j.queue));
    return c.json({
      identity: scope.identity,
      role: scope.role,
      connection: deps.connection(),
      queues: queuesOf(jobs, workers),
      jobs: jobs.slice(0, maxListed),
      workers,
      agents,
    });
  });

  app.get("/api/jobs/:id", async (c) => c.json(await visibleJob(c, callerWith(c, "read"))));

  app.get("/api/jobs/:id/dead-letters", async (c) => {
    const job = await visibleJob(c, callerWith(c, "read"));
    return c.json({ deadLetters: await deps.deadLetters(job.id) });
  });

  app.post("/api/jobs/:id/cancel", async (c) => {
    const scope = callerWith(c, "operate");
    const body = decodeBody(CancelBody, await readJson(c.req.raw, maxBodyBytes));
    const job = await visibleJob(c, scope);
    deps.log.info({ jobId: job.id, identity: scope.identity }, "job cancelled from the dashboard");
    // The record says who, whatever reason the caller gave.
    const by = scope.identity;
    // The caller's text cut so that "(by …)" is kept in the record's reason ("cancelled: …").
    const reason = body.reason
      ? reasonWithSuffix("cancelled: ", body.reason, ` (by ${by})`)
      : `from the dashboard by ${by}`;
    await deps.cancel(job.id, reason);
    return c.json(await visibleJob(c, scope));
  });

  app.post("/api/jobs/:id/redrive", async (c) => {
    const scope = callerWith(c, "operate");
    const body = decodeBody(RedriveBody, await readJson(c.req.raw, maxBodyBytes));
    const job = await visibleJob(c, scope);
    deps.log.info({ jobId: job.id, identity: scope.identity }, "dead tasks redriven from the dashboard");
    await deps.redrive(job.id, body.tasks);
    return c.json(await visibleJob(c, scope));
  });

  /**
   * A stream's signal: its request's, or the dashboard's stop, through one controller linked to
   * both and freed when the stream ends. Not an `AbortSignal.any` with the stop: on Node 20 each
   * leaves a weak reference in the long-lived signal for good, one per stream ever opened.
   */
  const streamLinks = new LinkedControllers(deps.stopping);
  const stream = (
    c: Context<Env>,
    identity: string,
    run: (emit: Emit, signal: AbortSignal) => Promise<void>,
  ): Response => {
    const started = deps.streams.take(identity);
    const link = streamLinks.link(c.req.raw.signal);
    return eventStream(link.signal, deps.log, run, (running) => {
      started(running);
      void running.finally(() => streamLinks.unlink(link));
    });
  };

  app.get("/api/stream", (c) => {
    const scope = callerWith(c, "read");
    return stream(c, scope.identity, (emit, signal) => deps.streamOverview(scope.allows, emit, signal));
  });

  app.get("/api/jobs/:id/stream", async (c) => {
    const scope = callerWith(c, "read");
    const job = await visibleJob(c, scope);
    return stream(c, scope.identity, (emit, signal) => deps.streamJob(job, emit, signal));
  });

  app.notFound((c) =>
    c.json(new HttpError(404, ErrorCode.notFound, `no route ${c.req.method} ${c.req.path}`).body(), 404),
  );
  app.onError((error, c) => {
    const known = toHttpError(error);
    if (known.status >= 500) deps.log.warn({ err: error, path: c.req.path }, "dashboard request failed");
    if (known.status === 401) c.header("WWW-Authenticate", 'Bearer realm="jetstate"');
    if (known.status === 429) c.header("Retry-After", "1");
    return c.json(known.body(), known.status);
  });
  return app;
};

/**
 * The queues seen in the jobs listed and among the workers, each with its
 * active jobs and the tasks they have not answered yet (waiting or running:
 * the records count answers, not deliveries, so the two are not told apart).
 */
const queuesOf = (jobs: readonly DashboardJob[], workers: readonly DashboardWorker[]) => {
  const queues = new Map<string, { name: string; activeJobs: number; unanswered: number; workers: number }>();
  const of = (name: string) => {
    let q = queues.get(name);
    if (!q) {
      q = { name, activeJobs: 0, unanswered: 0, workers: 0 };
      queues.set(name, q);
    }
    return q;
  };
  for (const job of jobs) {
    const q = of(job.queue);
    if (job.status === "running" || job.status === "stalled" || job.status === "queuing") {
      q.activeJobs++;
      q.unanswered += Math.max(0, job.total - job.done - job.failed - job.dead);
    }
  }
  for (const worker of workers) of(worker.queue).workers++;
  return [...queues.values()].sort((a, b) => a.name.localeCompare(b.name));
};
