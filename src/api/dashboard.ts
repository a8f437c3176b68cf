import { BearerTokens } from "../adapters/http/bearer-tokens.ts";
import type { DashboardJob } from "../adapters/http/dashboard-app.ts";
import { createDashboardApp } from "../adapters/http/dashboard-app.ts";
import { chartOf } from "../adapters/http/dashboard-chart.ts";
import { StreamSlots } from "../adapters/http/dashboard-stream.ts";
import type { TokenConfig } from "../adapters/http/token-scopes.ts";
import { shownRecord } from "../effects/finalize-job.ts";
import { InvalidArgument } from "../kernel/errors.ts";
import { childLogger } from "../kernel/logger.ts";
import { rejectUnknownKeys } from "../kernel/validation.ts";
import { connectionMachine } from "../machines/connection.machine.ts";
import { jobMachine } from "../machines/job.machine.ts";
import { jobBook, jobFromRecord, streamJob, streamOverview, withLive } from "./dashboard-streams.ts";
import { requireRole } from "./permissions.ts";
import { partsOf, type Runtime } from "./runtime.ts";

export interface DashboardOptions {
  /**
   * Who may look and act, as for `createHttpApi`: `{ "<token>": { identity,
   * role, queues } }`. `read` looks, `operate` also cancels jobs and
   * redrives dead tasks; `worker` tokens are refused. A token sees only the
   * jobs and workers of its `queues` (`"*"`: all).
   */
  readonly tokens: Readonly<Record<string, TokenConfig>>;
}

export interface Dashboard {
  /** The Fetch-API handler: mount it in any server (`@hono/node-server`, Bun, Deno…). */
  fetch(request: Request): Promise<Response>;
  /**
   * Ends the dashboard's own job-events reader and every stream it has open
   * (each an ordered consumer on NATS); resolves once they have. Later
   * streams end at once. `rt.stop()` does the same.
   */
  stop(): Promise<void>;
}

const optionKeys = ["tokens"] as const;
/** Event streams open at once per token identity: each is a reader (an ordered consumer on NATS). */
const streamsPerIdentity = 8;

const isActive = (job: DashboardJob) =>
  job.status === "queuing" || job.status === "running" || job.status === "stalled";
/** Active jobs first, then the most recently changed. */
const listOrder = (a: DashboardJob, b: DashboardJob) =>
  Number(isActive(b)) - Number(isActive(a)) || b.updatedAt - a.updatedAt;

/**
 * A live web dashboard of the runtime's jobs, queues, workers and agents,
 * with each job's statechart drawn as it moves and its dead tasks redriven
 * with a button (docs/architecture.md, "The dashboard"). Every asset is in
 * the package: it works with no internet. Needs the `submitter` role (it
 * reads jobs and their events); throws `InvalidArgument` for bad options.
 *
 * @example
 * const dashboard = createDashboard(rt, {
 *   tokens: { [process.env.DASHBOARD_TOKEN!]: { identity: "ops", role: "operate", queues: "*" } },
 * });
 * serve({ fetch: dashboard.fetch, hostname: "127.0.0.1", port: 8081 }); // @hono/node-server
 * // then open http://127.0.0.1:8081/#token=<the token>
 */
export const createDashboard = (rt: Runtime, options: DashboardOptions): Dashboard => {
  const { core, jobs, broker } = partsOf(rt);
  if (typeof options !== "object" || options === null)
    throw new InvalidArgument({ message: "options: must be an object", field: "options" });
  rejectUnknownKeys(options, optionKeys, "");
  requireRole(core.options.roles, "submitter", "createDashboard()");
  const tokens = new BearerTokens(options.tokens);
  // The dashboard is an HTTP surface of the runtime: its lines carry the HTTP API's actor key.
  const log = childLogger(core.logger, { actor: "http" });
  const connection = core.connection.actor;
  const book = jobBook(rt, broker);
  const closing = new AbortController();
  const streams = new StreamSlots(streamsPerIdentity);

  const getJob = async (id: string) => {
    // A lane job whose commit is not written yet shows as running, as `rt.jobs.get()` has it.
    const found = await shownRecord(broker, id);
    return found ? jobFromRecord(found.record, jobs.watchedSnapshot(id)) : undefined;
  };

  const app = createDashboardApp({
    tokens,
    log,
    charts: { job: chartOf(jobMachine.root), connection: chartOf(connectionMachine.root) },
    stopping: AbortSignal.any([core.stopping, closing.signal]),
    streams,
    listJobs: async (queues) => {
      const wanted = queues && new Set(queues);
      return (await book.listed())
        .filter((job) => !wanted || wanted.has(job.queue))
        .map((job) => withLive(job, jobs.watchedSnapshot(job.id)))
        .sort(listOrder);
    },
    getJob,
    deadLetters: async (id) =>
      (await rt.jobs.deadLetters(id)).map(({ index, taskId, error, deliveries, at, source }) => ({
        index,
        taskId,
        error,
        deliveries,
        at,
        source,
      })),
    cancel: async (id, reason) => {
      // A handle is how a job is cancelled from any runtime; its actor here ends with the cancel.
      const handle = await rt.jobs.get(id);
      await handle?.cancel(reason);
    },
    redrive: async (id, tasks) => {
      await rt.jobs.redrive(id, tasks);
    },
    workers: () => rt.workers.list(),
    agents: () => rt.agents.list(),
    connection: () => ({
      state: broker.kind === "memory" ? "memory" : rt.connection.state,
      value: connection.getSnapshot().value,
    }),
    streamOverview: (visible, emit, signal) => streamOverview(rt, jobs, connection, visible, emit, signal),
    streamJob: (job, emit, signal) => streamJob(rt, jobs, broker, job, emit, signal),
  });
  return {
    fetch: async (request) => app.fetch(request),
    stop: async () => {
      closing.abort();
      await Promise.all([book.stop(), streams.settled()]);
    },
  };
};
