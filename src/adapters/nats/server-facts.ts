import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  jetstreamManager,
  type StreamInfo,
} from "@nats-io/jetstream";
import { type NatsConnection, nuid } from "@nats-io/transport-node";
import { inBatches } from "../../kernel/batches.ts";
import type { ServerTime } from "../../kernel/clock.ts";
import { isPermissionViolation, mayHaveApplied } from "./classify-error.ts";
import type { NatsContext } from "./nats-context.ts";
import { nanos } from "./streams.ts";

/** One stream on the server (a KV bucket is a stream named `KV_<bucket>`). */
export interface StreamFacts {
  readonly name: string;
  readonly replicas: number;
  readonly consumers: number;
  readonly messages: number;
  /** `workqueue`, `limits` or `interest`. */
  readonly retention: string;
  /** How long it keeps a message (a bucket's TTL); 0: for ever. */
  readonly maxAgeMs: number;
}

/** What `rt.admin.diagnose()` reads from the server; the API decides what is a problem. */
export interface ServerFacts {
  readonly server: {
    readonly name: string | undefined;
    readonly version: string | undefined;
    readonly cluster: string | undefined;
    /** The server says JetStream is on, and its API answered this account. */
    readonly jetstream: boolean;
    readonly jetstreamError?: string;
  };
  /** Streams whose names start with one of the prefixes asked for. */
  readonly streams: readonly StreamFacts[];
  /** This identity listed the streams (an admin); else only the expected ones were read. */
  readonly listed: boolean;
  /** Expected streams whose info this identity could not read (neither found nor reported missing). */
  readonly unreadable: readonly string[];
  /** Server time minus this host's, measured at the middle of one round trip. */
  readonly clock: { readonly skewMs: number; readonly roundTripMs: number } | { readonly error: string };
}

export interface FactsRequest {
  readonly streamPrefixes: readonly string[];
  /** Read one by one when this identity may not list streams. */
  readonly expected: readonly string[];
  /** A stream whose new consumer's `created` stamp gives the server's time (an ephemeral consumer, removed at once). */
  readonly clockStream: string;
}

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/** `2026-12-02T01:03:36.443004941Z`: nanoseconds cut to the milliseconds Date reads. */
export const parseServerTime = (stamp: string): number => Date.parse(stamp.replace(/(\.\d{3})\d+/, "$1"));

/**
 * The server's time, read as the creation stamp of a consumer of `stream`
 * made for it and removed at once (named here: one whose create was
 * answered too late is removed all the same; one no delete reaches goes
 * after 5 s idle). `seenAt`: `performance.now()` before its creation was
 * asked for, so the stamp is no earlier than the server's time then, and
 * later by at most `roundTripMs`.
 */
export const consumerStamp = async (
  jsm: JetStreamManager,
  stream: string,
): Promise<ServerTime & { readonly roundTripMs: number }> => {
  const name = `clock_${nuid.next()}`;
  const seenAt = performance.now();
  const consumer = await jsm.consumers
    .add(stream, {
      name,
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.New,
      inactive_threshold: nanos(5000),
    })
    .catch(async (error: unknown) => {
      if (mayHaveApplied(error)) await jsm.consumers.delete(stream, name).catch(() => undefined);
      throw error;
    });
  const roundTripMs = performance.now() - seenAt;
  await jsm.consumers.delete(stream, name).catch(() => undefined);
  return { at: parseServerTime(consumer.created), seenAt, roundTripMs };
};

/** The server's clock against this host's, by a consumer's stamp (`jsm` made before: its own request is no part of the measure). */
const measureClock = async (jsm: JetStreamManager, stream: string): Promise<ServerFacts["clock"]> => {
  const sentAt = Date.now();
  const { at, roundTripMs } = await consumerStamp(jsm, stream);
  return { skewMs: Math.round(at - (sentAt + roundTripMs / 2)), roundTripMs: Math.round(roundTripMs) };
};

/**
 * Of these read-only API subjects (info, names, list, message get; a direct get with no body gets no answer at all), those the server
 * refuses to this identity. Each is sent a request; an answer of any kind
 * (an error, no responders, a timeout) means allowed; a refused publish
 * rejects with the server's permissions violation.
 */
export const deniedSubjects = (
  core: NatsContext,
  subjects: readonly string[],
  timeoutMs: number,
): Promise<string[]> =>
  core.run("admin.diagnose.permissions", (nc) => deniedOf(nc, [...new Set(subjects)], timeoutMs), {
    timeoutMs: timeoutMs * (subjects.length + 1),
  });

const deniedOf = async (nc: NatsConnection, subjects: readonly string[], timeoutMs: number) => {
  // A batch at a time (a thousand probes with 50 queues, one after another, outlasted the CLI's
  // deadline a few ms from the server). nats.js pairs a violation with the first request pending
  // on its subject: the subjects are distinct (the caller's set), so each is its own probe's.
  const refused = await inBatches(subjects, async (subject) => {
    try {
      await nc.request(subject, "", { timeout: timeoutMs });
      return false;
    } catch (error) {
      return isPermissionViolation(error);
    }
  });
  return subjects.filter((_, i) => refused[i]);
};

/** Reads the server, its jetstate streams, its clock and this identity's permissions; fails on no connection, or a stream listing not answered. */
export const readServerFacts = (core: NatsContext, request: FactsRequest): Promise<ServerFacts> =>
  core.run("admin.diagnose", async (nc) => {
    const info = nc.info;
    const server = { name: info?.server_name, version: info?.version, cluster: info?.cluster };
    let jsm: Awaited<ReturnType<typeof jetstreamManager>>;
    try {
      jsm = await jetstreamManager(nc);
    } catch (error) {
      const off = { ...server, jetstream: false, jetstreamError: message(error) };
      return {
        server: off,
        streams: [],
        listed: false,
        unreadable: [],
        clock: { error: "JetStream is off" },
      };
    }
    const streams: StreamFacts[] = [];
    const unreadable: string[] = [];
    const facts = (s: StreamInfo): StreamFacts => ({
      name: s.config.name,
      replicas: s.config.num_replicas,
      consumers: s.state.consumer_count,
      messages: s.state.messages,
      retention: s.config.retention,
      maxAgeMs: Math.floor(s.config.max_age / 1e6),
    });
    let listed = true;
    try {
      for await (const s of jsm.streams.list())
        if (request.streamPrefixes.some((p) => s.config.name.startsWith(p))) streams.push(facts(s));
    } catch (error) {
      // Listing is an admin's grant; the others may still read the streams they use. Any other
      // failure (no answer) is the operation's to retry: read as "nothing listed", the queues'
      // streams went unchecked and a doctor whose listing timed out said all was well.
      if (!isPermissionViolation(error)) throw error;
      listed = false;
      streams.length = 0;
      for (const name of request.expected) {
        try {
          streams.push(facts(await jsm.streams.info(name)));
        } catch (error) {
          if (!(error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound))
            unreadable.push(name);
        }
      }
    }
    streams.sort((a, b) => a.name.localeCompare(b.name));
    const clock = streams.some((s) => s.name === request.clockStream)
      ? await measureClock(jsm, request.clockStream).catch((error: unknown) => ({ error: message(error) }))
      : { error: `not measured: stream ${request.clockStream} is missing` };
    return { server: { ...server, jetstream: info?.jetstream === true }, streams, listed, unreadable, clock };
  });
