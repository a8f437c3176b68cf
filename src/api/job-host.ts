import { type Actor, createActor } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import type { SubmitHooks } from "../effects/submit-job.ts";
import { childLogger } from "../kernel/logger.ts";
import { jobsHostMachine } from "../machines/jobs-host.machine.ts";
import { JobChores } from "./job-chores.ts";
import { type JobEffects, provideJobEffects } from "./job-effects.ts";
import { renewEveryMs } from "./job-lease.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/** What a runtime's job actors are started with: one object per runtime, which keys its host. */
export interface JobActorDeps {
  readonly core: RuntimeCore;
  readonly broker: Broker;
  /** Supervision lease: renewed every third of it; another runtime takes over after it. */
  readonly leaseMs: number;
  readonly submitHooks?: SubmitHooks;
  /** The runtime is stopping (`jobs.stop()` called): a submit waiting on another of its key gives up. */
  readonly stopping?: () => boolean;
}

/**
 * What a runtime's jobs share: the job machine with its effects, the parent of their actors
 * (one actor system), and one timer for their periodic steps.
 */
interface JobHost {
  readonly effects: JobEffects;
  readonly parent: Actor<typeof jobsHostMachine>;
  readonly chores: JobChores;
}

/**
 * Made on a runtime's first job, keyed by its deps (one object per runtime),
 * with the runtime's heartbeat: one write every third of the lease renews
 * every lease the runtime holds (each job's own renewal then writes nothing).
 */
const hosts = new WeakMap<JobActorDeps, JobHost>();
export const hostOf = (deps: JobActorDeps): JobHost => {
  let host = hosts.get(deps);
  if (!host) {
    const { core, broker, leaseMs } = deps;
    const log = childLogger(core.logger, { actor: "runtime" });
    const beat = () =>
      broker.leases
        .heartbeat(leaseMs, core.clock.now())
        // Tried again on the next tick; leases it covered run out like any not renewed in time.
        .catch((error: unknown) => log.debug({ err: error }, "heartbeat not written"));
    host = {
      effects: provideJobEffects({
        broker: deps.broker,
        clock: core.clock,
        leaseMs: deps.leaseMs,
        takeOver: mayTakeOver(core),
        ...(deps.submitHooks ? { submitHooks: deps.submitHooks } : {}),
        ...(deps.stopping ? { stopping: deps.stopping } : {}),
        loops: core.loops,
      }),
      // The inspector sees every job's actor through their one system.
      parent: createActor(jobsHostMachine, {
        id: "jobs",
        ...(core.inspect ? { inspect: core.inspect.inspect } : {}),
      }).start(),
      // Half the renewal period: a renewal runs at most half a period late.
      chores: new JobChores(core.clock, core.loops, renewEveryMs(deps.leaseMs) / 2),
    };
    hosts.set(deps, host);
    host.chores.add({ name: "lease-heartbeat", everyMs: renewEveryMs(leaseMs), run: beat });
  }
  return host;
};

/** Whether this runtime's watchers take over a job whose supervisor stopped renewing its lease. */
export const mayTakeOver = (core: RuntimeCore): boolean =>
  core.options.jobs.takeOver && core.options.roles.has("supervisor");
