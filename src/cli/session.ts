import { hostname } from "node:os";
import { createRuntime, type JobHandle, type JobRecord, type Role, type Runtime } from "../index.ts";
import { cliLogger } from "./cli-logger.ts";
import { CliFailure, ExitCode, notFound } from "./exit-codes.ts";

/** The flags every command takes (commander's global options). */
export interface GlobalOptions {
  readonly servers?: string;
  readonly prefix?: string;
  /** Bound on reaching NATS and on each answer, in ms. */
  readonly timeout: number;
  readonly json: boolean;
}

/**
 * The least a command's runtime needs. Every role starts background work
 * when the runtime is created, except `worker`, which does nothing until a
 * worker is started: reading presence, agents and the server needs no more.
 * - `read`: the worker role, nothing started;
 * - `jobs`: the submitter role for `rt.jobs` (its one record watch), never
 *   taking a job over (`jobs.takeOver: false`): a `get` only watches;
 * - `admin`: `rt.admin.cleanup()`.
 */
export type Need = "read" | "jobs" | "admin";

const rolesFor: Record<Need, Role> = { read: "worker", jobs: "submitter", admin: "admin" };

export const openRuntime = (options: GlobalOptions, need: Need): Promise<Runtime> =>
  createRuntime({
    // Always NATS: without a server and NATS_URL the runtime would pick the memory broker.
    broker: "nats",
    ...(options.servers === undefined ? {} : { servers: options.servers }),
    ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
    name: `jetstate-cli-${hostname()}-${process.pid}`,
    logger: cliLogger(),
    roles: rolesFor[need],
    // No reaper, no cleanup loop, no scheduler: a CLI run changes only what its command says.
    jobs: { takeOver: false, cleanupIntervalMs: 0, reapIntervalMs: 0, scheduler: false },
    connection: {
      operationTimeoutMs: options.timeout,
      connectTimeoutMs: Math.min(options.timeout, 5000),
      drainTimeoutMs: Math.min(options.timeout, 2000),
    },
  });

/** Resolves with `work`, or rejects when `ms` passed first: the CLI never waits on NATS unbounded. */
const within = <A>(ms: number, work: Promise<A>, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new CliFailure(
            "OperationTimeout",
            `${what}: no answer from NATS within ${ms} ms`,
            ExitCode.unreachable,
          ),
        ),
      ms,
    );
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
};

/**
 * Runs `command` with a runtime made for `need`, then stops the runtime
 * (bounded): a short-lived process must end by itself. `bounded: false` for
 * commands that wait for a job on purpose (`jobs watch`); they bound their
 * own first answer.
 */
export const withRuntime = async <A>(
  options: GlobalOptions,
  need: Need,
  command: (rt: Runtime) => Promise<A>,
  bounded = true,
): Promise<A> => {
  const rt = await openRuntime(options, need);
  try {
    // A margin past the operation deadline: the runtime's own timeout error, which names the
    // operation, normally comes first.
    const work = command(rt);
    return bounded ? await within(options.timeout + 1000, work, "command") : await work;
  } finally {
    await within(options.timeout, rt.stop(), "stop").catch(() => undefined);
  }
};

export { within };

/** The job's record as stored, or exit 3; nothing is watched. */
export const recordOrNotFound = async (rt: Runtime, id: string): Promise<JobRecord> => {
  const record = await rt.jobs.record(id);
  if (!record) throw notFound(`no job ${id}`);
  return record;
};

/** The job, watched by this runtime (which never takes it over), or exit 3. */
export const jobOrNotFound = async (rt: Runtime, id: string): Promise<JobHandle> => {
  const handle = await rt.jobs.get(id);
  if (!handle) throw notFound(`no job ${id}`);
  return handle;
};
