import { PermanentBrokerError } from "../../kernel/errors.ts";
import type { Logger } from "../../kernel/logger.ts";
import { isPermissionViolation } from "./classify-error.ts";

/**
 * How long a refused create is not asked again. Meanwhile the stream is only
 * looked at (its info, which every role that uses it may ask): no violation.
 * Asked again after it in case the user was granted the create since.
 */
const askAgainMs = 60_000;

/**
 * The streams and buckets this runtime's NATS user was refused the create
 * of. A least-privilege worker or submitter may not make the shared streams
 * and buckets: after the server came back with an empty store and before an
 * admin provisions again, every loop that sets them up asked for the create
 * each time it started again (every 5 s at most, three loops and the
 * presence announcement: each a violation in the server's log), and said
 * only "loop failed". A refused name is now asked for at most once a minute
 * and looked at in between; the first refusal of a spell is said once, at
 * warn, with what an admin must do; the spell ends when every refused name
 * exists again (found or made).
 */
export class RefusedCreates {
  /** When each missing name's create was last refused. */
  readonly #refusedAt = new Map<string, number>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Whether the create of `name` may be asked for now (never refused, or not for a while). */
  mayAsk(name: string): boolean {
    const at = this.#refusedAt.get(name);
    return at === undefined || Date.now() - at >= askAgainMs;
  }

  /** `name` is there (found or made). */
  exists(name: string): void {
    this.#refusedAt.delete(name);
  }

  /**
   * What the create of `name` failed with: a permission violation is
   * remembered (and said, the first of a spell) and answered as a
   * `PermanentBrokerError` naming what is missing; anything else as it is.
   */
  failed(name: string, error: unknown): unknown {
    if (!isPermissionViolation(error)) return error;
    const first = this.#refusedAt.size === 0;
    this.#refusedAt.set(name, Date.now());
    const failure = this.missing(name, error);
    if (first)
      this.#log.warn(
        { stream: name, err: error },
        `${failure.message}; this runtime waits for it (asking for the create at most once a minute, a violation in the server's log each time)`,
      );
    else this.#log.debug({ stream: name }, failure.message);
    return failure;
  }

  /** The error for `name` missing, its create refused to this user. */
  missing(name: string, cause?: unknown): PermanentBrokerError {
    return new PermanentBrokerError({
      message: `stream ${name} is missing (the server back with an empty store, or never provisioned) and this runtime's NATS user may not create it: an admin must provision it (rt.admin.provision())`,
      operation: "stream.create",
      notProvisioned: name,
      ...(cause === undefined ? {} : { cause }),
    });
  }
}
