import type { Broker } from "../adapters/broker.ts";
import { mover } from "../effects/move-held.ts";
import type { ReapReport } from "../effects/reap-submits.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import { adoptOrphans, type TakeoverHost } from "./job-takeover.ts";
import type { JobsOptions } from "./jobs-face.ts";
import { Movers } from "./movers.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/** What the registry's background loops reach of it. */
export interface JobLoopsHost {
  readonly log: Logger;
  /** One reaper pass (`rt.jobs.reap()`). */
  reap(): Promise<ReapReport>;
  /** What a takeover pass adopts the jobs it finds into. */
  readonly takeover: TakeoverHost;
}

/**
 * The background loops of the registry's roles (reaper, takeover, dead
 * letters) as the runtime's loops; returns the movers of held (delayed)
 * tasks, undefined where the runtime publishes no task.
 */
export const startJobLoops = (
  core: RuntimeCore,
  broker: Broker,
  options: JobsOptions,
  host: JobLoopsHost,
): Movers | undefined => {
  // Each background loop belongs to a role: a runtime without it runs none of its work, so
  // its NATS user needs none of its permissions.
  const roles = core.options.roles;
  const loops = core.loops;
  // 0: no reaper here (a short-lived admin, e.g. the CLI's `cleanup --dry-run`, must change nothing).
  if (roles.has("admin") && options.reapIntervalMs > 0)
    loops.every("reaper", options.reapIntervalMs, () => reapOnce(host));
  if (roles.has("supervisor")) {
    if (options.takeOver)
      loops.every("takeover", Math.max(50, options.leaseMs / 2), () => adoptOrphans(host.takeover));
    loops.run("dead-letters", (signal) =>
      broker.processExhausted(signal, ({ jobId, index, error, countedDead }) =>
        host.log.error(
          { jobId, index, err: error, countedDead },
          "exhausted task could not be dead-lettered; given up, not retried",
        ),
      ),
    );
  }
  // Every runtime that publishes tasks moves held (delayed) tasks once due: those of the queues
  // of the delayed jobs it watches (api/movers.ts), whose supervisor is always one of them.
  if (roles.has("submitter") || roles.has("supervisor")) {
    const moverLog = childLogger(core.logger, { actor: "mover" });
    const onHeld = mover(broker, () => core.clock.now(), moverLog);
    return new Movers(loops, (queue, signal) => broker.consumeHeld(queue, onHeld, signal));
  }
  return undefined;
};

const reapOnce = async (host: JobLoopsHost): Promise<void> => {
  const report = await host.reap();
  if (report.rolledBack.length + report.rolledForward.length > 0) {
    host.log.warn({ ...report }, "reaper finished submits that died");
  }
};
