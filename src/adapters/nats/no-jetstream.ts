import { type NatsConnection, RequestError } from "@nats-io/transport-node";
import { PermanentBrokerError } from "../../kernel/errors.ts";
import type { Logger } from "../../kernel/logger.ts";

/** How long the JetStream API may take to answer the probe: an answer of any kind says it is there. */
const probeTimeoutMs = 2000;
/** A verdict older than this is looked at again (in the background) when it is used. */
const verdictMs = 5000;

/**
 * True when `error` (or an error it wraps) is nats.js's for a JetStream request or publish
 * nobody answered (`JetStreamNotEnabled`, which nats.js does not export).
 */
const unanswered = (error: unknown): boolean => {
  for (let e = error, depth = 0; e instanceof Error && depth < 4; depth++) {
    if (e.name === "JetStreamNotEnabled") return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
};

/** What the client's server says of itself, for the error's message. */
const serverOf = (nc: NatsConnection): string => {
  const info = nc.info;
  const name = info?.server_name ? ` ${info.server_name}` : "";
  const version = info?.version ? ` (nats-server ${info.version})` : "";
  return `the NATS server${name}${version} at ${nc.getServer()}`;
};

/**
 * The error of an operation (or a loop) that needs JetStream on a client that has none: its
 * message says so and what to do, with no cause (nats.js's "jetstream is not enabled: no
 * responders: '$JS.API.INFO'", its cause's own message again, says nothing more). Permanent:
 * retrying it only waits out its deadline.
 */
const noJetStream = (nc: NatsConnection, operation: string): PermanentBrokerError =>
  new PermanentBrokerError({
    message: `${operation}: ${serverOf(nc)} has no JetStream, and no server answers the JetStream API for this account: start nats-server with -js (or \`jetstream {}\` in its config)`,
    operation,
  });

interface Verdict {
  readonly absent: boolean;
  readonly at: number;
}

/**
 * Whether each client has JetStream, as far as jetstate can tell: absent when the client's
 * server says it has JetStream off (the INFO it sends on connect) and nothing answers the
 * account's JetStream API (no responders to `$JS.API.INFO`). Looked at once a client
 * connects, and again in the background when an absent verdict over `verdictMs` old is used.
 * A server with JetStream on whose API does not answer yet (just restarted) is not absent:
 * its failures stay transient. In a cluster, a server with JetStream off passes the API on
 * to those that have it: not absent either. Nor once JetStream was seen on any client of
 * this connection: a server back without it for a while (between two stream leaders, a
 * restart) is an outage, retried; permanent, a worker gave up its results there and the
 * job never ended (leader-loss.test.ts).
 */
export class JetStreamPresence {
  readonly #verdicts = new WeakMap<NatsConnection, Verdict>();
  readonly #probing = new WeakSet<NatsConnection>();
  /** JetStream answered, or a server said it has it, on some client of this connection. */
  #seen = false;
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Looks at `nc` (a client just connected); logs one error when it has no JetStream. */
  check(nc: NatsConnection): void {
    // A server with JetStream on says so; only one that says nothing (or off) is probed.
    if (nc.info?.jetstream === true) {
      this.#seen = true;
      this.#verdicts.delete(nc);
      return;
    }
    if (this.#probing.has(nc)) return;
    this.#probing.add(nc);
    const wasAbsent = this.#verdicts.get(nc)?.absent === true;
    void nc
      .request("$JS.API.INFO", undefined, { timeout: probeTimeoutMs })
      .then(
        () => false,
        (error: unknown) => error instanceof RequestError && error.isNoResponders(),
      )
      .then((absent) => {
        this.#probing.delete(nc);
        if (!absent) this.#seen = true;
        this.#verdicts.set(nc, { absent, at: Date.now() });
        if (absent && !wasAbsent)
          this.#log.error(
            { server: nc.info?.server_name, url: nc.getServer() },
            `${serverOf(nc)} has no JetStream, and no server answers the JetStream API for this account: every jetstate operation fails until it has (start nats-server with -js, or \`jetstream {}\` in its config)`,
          );
      });
  }

  /**
   * What a failure of `operation` on `nc` is: a JetStream call nobody answered on a client
   * found with no JetStream is `noJetStream` (permanent); anything else is left as it is.
   */
  explain(nc: NatsConnection, error: unknown, operation: string): unknown {
    const verdict = this.#verdicts.get(nc);
    if (this.#seen || verdict?.absent !== true || !unanswered(error)) return error;
    if (Date.now() - verdict.at > verdictMs) this.check(nc);
    return noJetStream(nc, operation);
  }
}
