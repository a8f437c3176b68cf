import { JetStreamApiError } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { TransientBrokerError } from "../../kernel/errors.ts";
import type { NatsContext, RunOptions } from "./nats-context.ts";

/** JetStream API "stream not found". */
const streamNotFound = 10059;

/**
 * True when `error` (or the error it wraps) says that something jetstate sets
 * up is not on the server: a stream not found, or no stream answering a KV
 * read or a publish (a KV bucket is a stream; nats.js reports a missing one
 * as a timeout or "no responders"). The server may have come back with an
 * empty store, or someone deleted it.
 */
const isMissingSetup = (error: unknown): boolean => {
  for (let e = error, depth = 0; e instanceof Error && depth < 4; depth++) {
    if (e instanceof JetStreamApiError) return e.code === streamNotFound;
    if (e.name === "TimeoutError" || e.name === "NoRespondersError" || e.name === "JetStreamNotEnabled")
      return true;
    if (/no responders|stream not found/i.test(e.message)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
};

/**
 * What jetstate sets up once per client (shared streams, buckets, a queue's
 * streams, API handles), remembered so that hot paths need not look at the
 * server every time. Streams and buckets are set up once per client object,
 * but a server can come back with an empty store while the client only
 * reconnects: so everything remembered for a client is forgotten together
 * (`forget`) when an operation finds something missing, and the next use
 * sets it up again (looked up first, created when missing, as always).
 */
export class ClientSetups {
  readonly #caches: WeakMap<NatsConnection, unknown>[] = [];

  /** A per-client cache that `forget` clears. */
  cache<T>(): WeakMap<NatsConnection, T> {
    const cache = new WeakMap<NatsConnection, T>();
    this.#caches.push(cache as WeakMap<NatsConnection, unknown>);
    return cache;
  }

  /**
   * A setup made once per client: the function returned gives, for `nc`, the same promise
   * until it fails (the next use tries again) or `forget` drops it.
   */
  once<T>(): (nc: NatsConnection, make: () => Promise<T>) => Promise<T> {
    const made = this.cache<Promise<T>>();
    return (nc, make) => {
      const known = made.get(nc);
      if (known) return known;
      const setUp = make();
      made.set(nc, setUp);
      // The caller sees the failure through the promise returned; here it only un-caches it.
      setUp.catch(() => {
        if (made.get(nc) === setUp) made.delete(nc);
      });
      return setUp;
    };
  }

  /** Drops everything set up for `nc`: the next use looks at the server again. */
  forget(nc: NatsConnection): void {
    for (const cache of this.#caches) cache.delete(nc);
  }

  /**
   * What an operation that failed with `error` on `nc` throws: when something
   * set up is missing, the setups are forgotten and a missing stream becomes
   * transient (the retry sets it up again); anything else is left as it is.
   */
  afterFailure(nc: NatsConnection, error: unknown, operation: string): unknown {
    if (!isMissingSetup(error)) return error;
    this.forget(nc);
    if (error instanceof JetStreamApiError && error.code === streamNotFound)
      return new TransientBrokerError({
        message: `${operation}: ${error.message} (set up again on the next attempt)`,
        operation,
        cause: error,
      });
    return error;
  }

  /** `core.run`, with a failure that finds a setup missing handled by `afterFailure`. */
  run<A>(
    core: Pick<NatsContext, "run">,
    name: string,
    op: (nc: NatsConnection, signal: AbortSignal) => Promise<A>,
    options?: RunOptions,
  ): Promise<A> {
    return core.run(
      name,
      async (nc, signal) => {
        try {
          return await op(nc, signal);
        } catch (error) {
          throw this.afterFailure(nc, error, name);
        }
      },
      options,
    );
  }
}
