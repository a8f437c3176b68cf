import type { Broker } from "../adapters/broker.ts";
import { type Backoff, plainThenUntilDone } from "../effects/retry.ts";
import { isTransient } from "../kernel/errors.ts";
import type { Logger } from "../kernel/logger.ts";
import type { StartedJobActor } from "./job-actor.ts";
import { restoreSupervised } from "./job-takeover.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/** The pauses between two reads of a record an actor must be handed again (`readRecordAgain`). */
const readAgainBackoff: Backoff = { initialMs: 500, maxMs: 5000, jitter: true };

/**
 * The job's record read again for its actor, once every later write reaches
 * it through the watch: a write between the read it started from and then
 * (the watch placed, or the actor tracked) was handed to no actor. A cancel
 * from another runtime landing between a `get`'s read and its actor's start
 * left that actor running for good, and its takeover then supervised a job
 * that was over. Older writes are the actor's to drop (by revision). With
 * `restore`, a job supervised here gets its consumer made again if it is gone.
 */
export const readRecordAgain = (
  core: RuntimeCore,
  broker: Broker,
  log: Logger,
  id: string,
  started: StartedJobActor,
  restore = false,
): void => {
  const read = async () => {
    // Ended meanwhile (its end heard, the runtime stopping): nothing to hand it.
    if (started.actor.getSnapshot().status !== "active") return;
    const found = await broker.getRecord(id);
    if (!found) return;
    started.onRecord(found.record, found.revision);
    // Only while the record names this runtime (or no one): a runtime held up past its lease
    // wakes holding it by its own clock, and the record read names the runtime that took over.
    if (restore) void restoreSupervised(broker, log, core.clock.now(), found.record, started.seen);
  };
  // Read until it is: a job over meanwhile is never written again, and an actor that missed
  // its end waited for it for good (its handles' `done()` with it).
  // At debug: through an outage every job watched here would say it, every few seconds.
  void plainThenUntilDone(read, readAgainBackoff, core.loops.signal, isTransient, (error, again) =>
    log.debug(
      { jobId: id, err: error },
      again ? "record not read again; trying again" : "record not read again",
    ),
  );
};
