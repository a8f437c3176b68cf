import { Schema } from "effect";
import type { LeaseAdmission, LeaseLimits, NotedSlots } from "../adapters/http/lease-port.ts";
import type { Permit, QueueControls } from "../adapters/queue-controls.ts";
import { decode } from "../kernel/decode.ts";
import { PermanentBrokerError } from "../kernel/errors.ts";
import type { Logger } from "../kernel/logger.ts";
import {
  decodeQueueSettings,
  defaultPermitLeaseMs,
  openQueue,
  permitLeaseOf,
  type QueueSettings,
} from "../kernel/queue-settings.ts";

/** How long a queue's settings read by the HTTP API are reused: a pause or a limit is obeyed within a second. */
const settingsTtlMs = 250;

/** How often at most a queue's record found gone is written back from here while that fails. */
const restoreEveryMs = 5_000;

/**
 * How often held permits are renewed (three times per default permit lease,
 * the shortest a queue may have), and the ended ones given back.
 */
const keepEveryMs = Math.floor(defaultPermitLeaseMs / 3);

/** A queue's settings, read or reused; `cached()`: how many queues' settings are kept now. */
export type SettingsOf = ((queue: string) => Promise<QueueSettings>) & { readonly cached: () => number };

/**
 * A queue's settings as the HTTP API reads them: at most every 250 ms per
 * queue (HTTP workers poll; no watch is kept per queue a request named).
 * Only the queues asked for within the last 250 ms are kept: a `*` token may
 * name any queue, and a cache of every name ever asked for grew without end.
 */
export const queueSettingsOf = (controls: QueueControls, log: Logger): SettingsOf => {
  // In the order read: an entry is made again only once it ran out, so the run-out ones come first.
  const known = new Map<string, { at: number; settings: Promise<QueueSettings> }>();
  const forgetRunOut = (now: number) => {
    for (const [queue, entry] of known) {
      if (now - entry.at < settingsTtlMs) return;
      known.delete(queue);
    }
  };
  /**
   * Each queue's record as last read here. A read that finds none after one (a read tells no
   * deletion's marker from nothing: the server back with an empty store) writes it back
   * (`restoreSettings`: a create that loses to a marker or any write; see `KeptQueueRecord`),
   * and answers with the limits last read while that fails (tried again at most every
   * `restoreEveryMs`). Before, the HTTP API leased such a queue's tasks unlimited. Kept for
   * the queues that have a record only (an admin wrote them): not every name asked for.
   */
  const lastRead = new Map<string, { readonly value: string; triedAt?: number }>();
  const noneStored = async (queue: string): Promise<QueueSettings> => {
    const last = lastRead.get(queue);
    if (!last) return openQueue(queue);
    const kept = decodeQueueSettings(queue, last.value).settings;
    const at = performance.now();
    if (last.triedAt !== undefined && at - last.triedAt < restoreEveryMs) return kept;
    last.triedAt = at;
    const wrote = await controls.restoreSettings(queue, last.value).catch((error: unknown) => {
      log.debug({ err: error, queue }, "queue record not written back yet; its last limits kept");
      return undefined;
    });
    // Refused (this user may not write the bucket): kept, as after a failure; tried again at most every 5 s.
    if (wrote === undefined || wrote === "refused") return kept;
    if (wrote) {
      log.warn(
        { queue },
        `queue ${queue}: its record was gone with no deletion marker: written back as last read here`,
      );
      return kept;
    }
    // A deletion's marker, or a write since: what is stored now (read again later, when this fails).
    const now = await controls.getSettings(queue).catch(() => "unread" as const);
    if (now === "unread") return kept;
    if (!now) {
      lastRead.delete(queue);
      return openQueue(queue);
    }
    lastRead.set(queue, { value: now.value });
    return decodeQueueSettings(queue, now.value).settings;
  };
  const read = (queue: string) => {
    // A monotonic clock: with the wall clock set back, entries stamped later would stay first.
    const now = performance.now();
    forgetRunOut(now);
    const cached = known.get(queue);
    if (cached) return cached.settings;
    const settings: Promise<QueueSettings> = controls.getSettings(queue).then(
      (found) => {
        if (!found) return noneStored(queue);
        lastRead.set(queue, { value: found.value });
        return decodeQueueSettings(queue, found.value).settings;
      },
      (error: unknown) => {
        // Never (no right to read the bucket, or none provisioned that this user may make): the
        // queue runs without its settings, as a native worker's does when they cannot be read,
        // and says so (at most once per read, every 250 ms: the open answer is kept that long).
        if (error instanceof PermanentBrokerError) {
          log.warn(
            { err: error, queue },
            "queue settings not read; HTTP reserves run the queue without them",
          );
          return openQueue(queue);
        }
        // Not now (a timeout, NATS away, the runtime stopping): not kept (a later read, made
        // meanwhile, is), and the request's failure, a 503 the worker retries. Read as open, a
        // paused or capped queue handed out tasks meanwhile.
        if (known.get(queue)?.settings === settings) known.delete(queue);
        throw error;
      },
    );
    known.set(queue, { at: now, settings });
    return settings;
  };
  return Object.assign(read, { cached: () => known.size });
};

/**
 * How long a pull waits for its first permit: the wait of a pull that finds
 * no task ready (a permit is given back at a task's end, or 1 s after a start).
 */
const permitWaitMs = 1000;

const unlimited = (slots: number): LeaseAdmission => ({ slots, bind: () => undefined });

/** The longest a note may move a lease's end: the longest lease a receipt carries (20 h). */
const maxNoteLeaseMs = 20 * 3600_000;

/**
 * A note between the API's instances about a lease whose permit one of them
 * holds (`QueueControls.noteLease`): it lasts `leftMs` more (a heartbeat;
 * a duration, not a time: the instances' clocks may differ), or it ended
 * (an answer).
 */
const LeaseNote = Schema.Union([
  Schema.Struct({
    ref: Schema.String,
    leftMs: Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: maxNoteLeaseMs })),
  }),
  Schema.Struct({ ref: Schema.String, ended: Schema.Literal(true) }),
]);
type LeaseNote = typeof LeaseNote.Type;

const readNote = (text: string): LeaseNote | undefined => {
  try {
    const decoded = decode(LeaseNote, JSON.parse(text), "lease note");
    return decoded.ok ? decoded.value : undefined;
  } catch {
    return undefined;
  }
};

/**
 * The queue limits of HTTP leases, from the pools native workers take from
 * (queue-gate.ts): a lease takes a concurrency permit, held until its task
 * is answered or its lease ends (a heartbeat moves that end), and a rate
 * permit, free again 1 s after. Permits are taken without waiting: a pull
 * that finds none leases nothing. A queue without limits costs no round trip.
 *
 * The held permits live in the process that leased the task. A heartbeat or
 * an answer through another instance of the API reaches it as a lease note
 * (`noteLease`): that instance holds no permit of the lease, so it tells the
 * others, and the holder, which listens to the notes of the queues it holds
 * permits of, moves the lease's end or gives the permit back. A note lost
 * leaves the permit to the lease's end; a crash of the holder gives it back
 * within the queue's `permitLeaseMs`. The token slots of the leases made here
 * (`follow`, the `LeaseBook`) hear the same notes: a heartbeat through
 * another instance of a lease made here is told whatever the queue's limits.
 */
export const leaseLimits = (
  controls: QueueControls,
  settingsOf: (queue: string) => Promise<QueueSettings>,
  log: Logger,
  /** The clock the leases' ends are on (the runtime's). */
  now: () => number = Date.now,
): LeaseLimits => {
  const held = new Map<string, { readonly permit: Permit; readonly queue: string; until: number }>();
  /**
   * The queues whose lease notes are heard: those with a permit held here, or
   * a lease whose token slot is booked here (dropped at the tick after the last).
   */
  const hearing = new Map<string, AbortController>();
  /** The token slots booked here, told of each note (`follow`). */
  let slots: NotedSlots | undefined;
  let keeper: NodeJS.Timeout | undefined;
  const tick = () => {
    const at = now();
    const queues = new Set<string>(slots?.queues(at));
    for (const [ref, h] of held) {
      if (h.until <= at) {
        held.delete(ref);
        h.permit.release();
      } else {
        h.permit.keep();
        queues.add(h.queue);
      }
    }
    for (const [queue, listening] of hearing) {
      if (queues.has(queue)) continue;
      listening.abort();
      hearing.delete(queue);
    }
    if (held.size === 0 && hearing.size === 0) {
      clearInterval(keeper);
      keeper = undefined;
    }
  };
  const keep = () => {
    if (keeper !== undefined) return;
    keeper = setInterval(tick, keepEveryMs);
    keeper.unref();
  };
  const release = (ref: string) => {
    const h = held.get(ref);
    if (!h) return false;
    held.delete(ref);
    h.permit.release();
    return true;
  };
  /** An end moved by a heartbeat, here or on another instance: never back (notes come in any order). */
  const extendHeld = (ref: string, until: number) => {
    const h = held.get(ref);
    if (h) h.until = Math.max(h.until, until);
    return h !== undefined;
  };
  const hear = (queue: string) => {
    if (hearing.has(queue)) return;
    const listening = new AbortController();
    hearing.set(queue, listening);
    controls.watchLeaseNotes(
      queue,
      (text) => {
        const note = readNote(text);
        if (!note) log.debug({ queue }, "lease note unreadable; ignored");
        else if ("ended" in note) {
          release(note.ref);
          slots?.noted(note.ref, "ended");
        } else {
          const until = now() + note.leftMs;
          extendHeld(note.ref, until);
          slots?.noted(note.ref, until);
        }
      },
      listening.signal,
    );
  };
  const hold = (ref: string, permit: Permit, queue: string, until: number) => {
    held.set(ref, { permit, queue, until });
    hear(queue);
    keep();
  };
  /** A lease this process holds no permit of: the one that does hears of it, if the queue has a cap. */
  const tell = (queue: string, note: LeaseNote) =>
    void settingsOf(queue)
      .then(
        ({ maxConcurrency }) => maxConcurrency !== undefined,
        // Not known whether it has one: told anyway (a note nobody holds a permit of is dropped).
        () => true,
      )
      .then((capped) => {
        if (capped) controls.noteLease(queue, JSON.stringify(note));
      });
  /**
   * The first permit waits its turn among the workers waiting for one (a
   * native worker waits: were the pull only to take free ones, native
   * workers would take every permit given back), at most `permitWaitMs`;
   * the others are taken if free.
   */
  const take = async (
    queue: string,
    kind: "concurrency" | "rate",
    max: number,
    signal: AbortSignal | undefined,
    leaseMs: number,
  ): Promise<Permit[]> => {
    try {
      const waited = AbortSignal.timeout(permitWaitMs);
      const first = await controls.takePermit(
        queue,
        kind,
        signal ? AbortSignal.any([signal, waited]) : waited,
        leaseMs,
      );
      if (!first) return [];
      return max > 1 ? [first, ...(await controls.takeFreePermits(queue, kind, max - 1, leaseMs))] : [first];
    } catch (error) {
      // The server away: no permit, no task; the worker polls again.
      log.warn({ err: error, queue, kind }, "permits not taken; no task leased");
      return [];
    }
  };

  return {
    admit: async (queue, max, signal) => {
      const settings = await settingsOf(queue);
      const { maxConcurrency, ratePerSecond } = settings;
      if (maxConcurrency === undefined && ratePerSecond === undefined) return unlimited(max);
      const leaseMs = permitLeaseOf(settings);
      const caps =
        maxConcurrency === undefined ? undefined : await take(queue, "concurrency", max, signal, leaseMs);
      const rates =
        ratePerSecond === undefined || caps?.length === 0
          ? undefined
          : await take(queue, "rate", caps?.length ?? max, signal, leaseMs);
      const slots = Math.min(caps?.length ?? max, rates?.length ?? max);
      return {
        slots,
        bind: (leases) => {
          for (const [n, p] of (caps ?? []).entries()) {
            const lease = leases[n];
            if (lease) hold(lease.ref, p, queue, lease.until);
            else p.release();
          }
          // A rate permit spent is free again in 1 s; one not spent at once.
          for (const [n, p] of (rates ?? []).entries()) p.release(n < leases.length ? 1000 : 0);
        },
      };
    },
    extend: (ref, until, queue, booked = true) => {
      const here = extendHeld(ref, until);
      if (queue === undefined) return;
      const note = { ref, leftMs: Math.max(0, until - now()) };
      // Its token slot is another instance's: told whatever the queue's limits.
      if (!booked) controls.noteLease(queue, JSON.stringify(note));
      else if (!here) tell(queue, note);
    },
    end: (ref, queue) => {
      if (!release(ref) && queue !== undefined) tell(queue, { ref, ended: true });
    },
    follow: (booked) => {
      slots = booked;
      return (queue) => {
        hear(queue);
        keep();
      };
    },
  };
};
