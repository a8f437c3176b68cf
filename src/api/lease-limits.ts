import type { LeaseAdmission, LeaseLimits } from "../adapters/http/lease-port.ts";
import { type Permit, permitLeaseMs, type QueueControls } from "../adapters/queue-controls.ts";
import type { Logger } from "../kernel/logger.ts";
import { decodeQueueSettings, openQueue, type QueueSettings } from "../kernel/queue-settings.ts";

/** How long a queue's settings read by the HTTP API are reused: a pause or a limit is obeyed within a second. */
const settingsTtlMs = 250;

/** How often held permits are renewed (three times per permit lease), and the ended ones given back. */
const keepEveryMs = Math.floor(permitLeaseMs / 3);

/** A queue's settings, read or reused; `cached()`: how many queues' settings are kept now. */
export type SettingsOf = ((queue: string) => Promise<QueueSettings>) & { readonly cached: () => number };

/**
 * A queue's settings as the HTTP API reads them: at most every 250 ms per
 * queue (HTTP workers poll; no watch is kept per queue a request named).
 * Only the queues asked for within the last 250 ms are kept: a `*` token may
 * name any queue, and a cache of every name ever asked for grew without end.
 */
export const queueSettingsOf = (controls: QueueControls): SettingsOf => {
  // In the order read: an entry is made again only once it ran out, so the run-out ones come first.
  const known = new Map<string, { at: number; settings: Promise<QueueSettings> }>();
  const forgetRunOut = (now: number) => {
    for (const [queue, entry] of known) {
      if (now - entry.at < settingsTtlMs) return;
      known.delete(queue);
    }
  };
  const read = (queue: string) => {
    // A monotonic clock: with the wall clock set back, entries stamped later would stay first.
    const now = performance.now();
    forgetRunOut(now);
    const cached = known.get(queue);
    if (cached) return cached.settings;
    const settings: Promise<QueueSettings> = controls.getSettings(queue).then(
      (found) => (found ? decodeQueueSettings(queue, found.value).settings : openQueue(queue)),
      // A failed read is not kept (a later one, made meanwhile, is), and does not block leasing.
      () => {
        if (known.get(queue)?.settings === settings) known.delete(queue);
        return openQueue(queue);
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

/**
 * The queue limits of HTTP leases, from the pools native workers take from
 * (queue-gate.ts): a lease takes a concurrency permit, held until its task
 * is answered or its lease ends (a heartbeat moves that end), and a rate
 * permit, free again 1 s after. Permits are taken without waiting: a pull
 * that finds none leases nothing. A queue without limits costs no round trip.
 *
 * The held permits live in this process: an answer through another instance
 * of the API gives the permit back only when the lease ends; a crash of this
 * process gives it back within `permitLeaseMs`.
 */
export const leaseLimits = (
  controls: QueueControls,
  settingsOf: (queue: string) => Promise<QueueSettings>,
  log: Logger,
): LeaseLimits => {
  const held = new Map<string, { readonly permit: Permit; until: number }>();
  let keeper: NodeJS.Timeout | undefined;
  const tick = () => {
    const now = Date.now();
    for (const [ref, h] of held) {
      if (h.until <= now) {
        held.delete(ref);
        h.permit.release();
      } else h.permit.keep();
    }
    if (held.size === 0) {
      clearInterval(keeper);
      keeper = undefined;
    }
  };
  const hold = (ref: string, permit: Permit, until: number) => {
    held.set(ref, { permit, until });
    if (keeper === undefined) {
      keeper = setInterval(tick, keepEveryMs);
      keeper.unref();
    }
  };
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
  ): Promise<Permit[]> => {
    try {
      const waited = AbortSignal.timeout(permitWaitMs);
      const first = await controls.takePermit(
        queue,
        kind,
        signal ? AbortSignal.any([signal, waited]) : waited,
      );
      if (!first) return [];
      return max > 1 ? [first, ...(await controls.takeFreePermits(queue, kind, max - 1))] : [first];
    } catch (error) {
      // The server away: no permit, no task; the worker polls again.
      log.warn({ err: error, queue, kind }, "permits not taken; no task leased");
      return [];
    }
  };

  return {
    admit: async (queue, max, signal) => {
      const { maxConcurrency, ratePerSecond } = await settingsOf(queue);
      if (maxConcurrency === undefined && ratePerSecond === undefined) return unlimited(max);
      const caps = maxConcurrency === undefined ? undefined : await take(queue, "concurrency", max, signal);
      const rates =
        ratePerSecond === undefined || caps?.length === 0
          ? undefined
          : await take(queue, "rate", caps?.length ?? max, signal);
      const slots = Math.min(caps?.length ?? max, rates?.length ?? max);
      return {
        slots,
        bind: (leases) => {
          for (const [n, p] of (caps ?? []).entries()) {
            const lease = leases[n];
            if (lease) hold(lease.ref, p, lease.until);
            else p.release();
          }
          // A rate permit spent is free again in 1 s; one not spent at once.
          for (const [n, p] of (rates ?? []).entries()) p.release(n < leases.length ? 1000 : 0);
        },
      };
    },
    extend: (ref, until) => {
      const h = held.get(ref);
      if (h) h.until = until;
    },
    end: (ref) => {
      const h = held.get(ref);
      if (!h) return;
      held.delete(ref);
      h.permit.release();
    },
  };
};
