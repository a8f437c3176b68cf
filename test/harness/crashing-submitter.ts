import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { SimulatedCrash, type SubmitStep } from "../../src/effects/submit-job.ts";
import { type Logger, silentLogger } from "../../src/kernel/logger.ts";

export interface CrashingSubmitter {
  /** Submits as any registry does; the submit "dies" after the step, nothing cleaned up. */
  readonly registry: JobRegistry;
  /** The crashed process is gone: its registry and connection stop. */
  stop(): Promise<void>;
}

/**
 * A submitter in a process of its own that dies after `step` of its submit:
 * the step's hook throws `SimulatedCrash` ("process died after <step>"), so
 * no rollback runs and the reaper or a takeover must finish the submit. It
 * takes over nothing and reaps nothing; its supervision lease is short
 * (300 ms), so another runtime may finish a committed job without waiting
 * out the default.
 */
export const crashingSubmitter = async (
  url: string,
  step: SubmitStep,
  options: {
    readonly logger?: Logger;
    readonly lane?: boolean;
    readonly retentionMs?: number;
    /**
     * What happens after `step` instead of the crash: a failure the submit
     * sees (it rolls back), e.g. a publish stored whose answer was lost.
     */
    readonly failure?: () => Promise<never>;
    /**
     * Instead of the crash, the submit waits for this after `step`, then
     * goes on (a submit slow between two steps, e.g. its tasks stored and
     * its commit not written yet).
     */
    readonly pause?: Promise<void>;
    /**
     * Runs after `step`, just before the crash: the submitter still renews
     * its lease (once dead, its job actor gives the lease back at once).
     */
    readonly beforeCrash?: () => Promise<void>;
  } = {},
): Promise<CrashingSubmitter> => {
  const core = await createRuntimeCore({
    servers: url,
    logger: options.logger ?? silentLogger(),
    ...(options.lane ? { jobs: { lane: true } } : {}),
  });
  const broker = createNatsBroker(core, {
    retentionMs: options.retentionMs ?? 7 * 24 * 3600_000,
    holder: "crashing",
  });
  const registry = new JobRegistry(core, broker, {
    reapIntervalMs: 3600_000,
    reapGraceMs: 10_000,
    leaseMs: 300,
    takeOver: false,
    submitHooks: {
      afterStep: async (at) => {
        if (at !== step) return;
        if (options.pause) return options.pause;
        if (options.failure) await options.failure();
        await options.beforeCrash?.();
        throw new SimulatedCrash(`process died after ${at}`);
      },
    },
  });
  return {
    registry,
    stop: async () => {
      await registry.stop();
      await core.stop();
    },
  };
};
