import type { QueueControls } from "../adapters/queue-controls.ts";
import type { LoopGroup } from "../effects/loop-group.ts";
import { untilDone } from "../effects/retry.ts";
import type { Logger } from "../kernel/logger.ts";
import { LinkedControllers } from "../kernel/signals.ts";

/** Pauses between failed write-backs (the server still away, its bucket not yet made again). */
const retryRestore = { initialMs: 200, maxMs: 5_000 } as const;

/**
 * A queue's record as this runtime last saw it stored, written back when it
 * vanished. A server back with an empty store loses the record (the queue's
 * limits and pause) with the rest: its workers then ran unlimited until an
 * admin configured the queue again. The watch of the record
 * (`QueueControls.watchSettings`) tells the two ways a record goes: a
 * deletion leaves a marker (its revision), a lost store nothing at all
 * (revision 0). Only the second is written back: the value as last seen, by
 * a create that loses to any write meanwhile (a `configure()`, a deletion);
 * the pools are seeded again with it (`restoreSettings`). A deletion by hand
 * is not undone, and is forgotten here.
 *
 * Held by each worker's gate (`QueueGate`) and by the runtime for each queue
 * it configured or paused (`QueueKeepers`): whoever of them hears the record
 * gone first writes it back, the others' creates lose. A write-back refused
 * (a least-privilege worker may only read the queues bucket) is said once
 * and not tried again until the record is heard gone again.
 */
export class KeptQueueRecord {
  /** The record as last seen stored (undefined: none, or deleted). */
  #value: string | undefined;
  /** The write-back in flight, tried again until it gets through or news of the record comes. */
  #restoring: AbortController | undefined;
  /** A write-back was refused (this user may not write the record) and said so: not said again until news. */
  #refusalSaid = false;
  readonly #controls: QueueControls;
  readonly #queue: string;
  readonly #log: Logger;
  readonly #links: LinkedControllers;

  constructor(controls: QueueControls, queue: string, log: Logger, signal: AbortSignal) {
    this.#controls = controls;
    this.#queue = queue;
    this.#log = log;
    this.#links = new LinkedControllers(signal);
  }

  /**
   * What the record's watch (or a read) says: `value` at `revision`, where
   * undefined at revision 0 is nothing stored at all. "vanished" when that
   * comes after a record seen: it is written back, and the caller keeps
   * applying what it had. Otherwise the news, kept.
   */
  heard(value: string | undefined, revision: number): "vanished" | "news" {
    if (value === undefined && revision === 0 && this.#value !== undefined) {
      this.#restore(this.#value);
      return "vanished";
    }
    this.#value = value;
    // A write-back failing meanwhile is not tried again (one in flight ends as it ends: its create
    // loses to what is stored now).
    this.#restoring = undefined;
    this.#refusalSaid = false;
    return "news";
  }

  #restore(value: string): void {
    if (this.#restoring) return;
    const restoring = this.#links.link();
    this.#restoring = restoring;
    const queue = this.#queue;
    void untilDone(
      async () => {
        const wrote = await this.#controls.restoreSettings(queue, value);
        // Not tried again: a retry cannot mend a permission, and each one was a violation in the
        // server's log, every 5 s for as long as no admin came. The record's watch brings the
        // admin's write; the limits are kept meanwhile.
        if (wrote === "refused") {
          if (!this.#refusalSaid)
            this.#log.warn(
              { queue },
              `queue ${queue}: its record was gone (the server back with an empty store); this runtime's NATS user may not write it back: its limits are kept and its tasks wait (its pools empty) until an admin configures the queue again, or an admin's runtime that saw it writes it back`,
            );
          this.#refusalSaid = true;
          return;
        }
        this.#log.warn(
          { queue, wrote },
          wrote
            ? `queue ${queue}: its record was gone, no deletion marker left (the server back with an empty store): written back as last seen here, its limits with it`
            : `queue ${queue}: its record was gone (the server back with an empty store); another write came first (another runtime's write-back, a configure)`,
        );
      },
      retryRestore,
      restoring.signal,
      () => this.#restoring === restoring,
      (error) => this.#log.debug({ queue, err: error }, "queue record not written back yet; trying again"),
    ).finally(() => {
      this.#links.unlink(restoring);
      if (this.#restoring === restoring) this.#restoring = undefined;
    });
  }
}

/**
 * The records of the queues this runtime wrote (configured, paused or
 * resumed), each kept as its own watch brings it from that write on, and
 * written back when it vanishes: a runtime that runs no worker of the queue
 * (an admin's) restores its limits too. `keep` is called after each write
 * with what it wrote; the first one places the queue's watch, which brings
 * every later write (anyone's) in the store's order.
 */
export const queueKeepers = (controls: QueueControls, loops: LoopGroup, log: Logger) => {
  const kept = new Map<string, KeptQueueRecord>();
  return (queue: string, value: string, revision: number): void => {
    if (kept.has(queue) || loops.signal.aborted) return;
    const record = new KeptQueueRecord(controls, queue, log, loops.signal);
    kept.set(queue, record);
    record.heard(value, revision);
    loops.run(`queue-record:${queue}`, (signal) =>
      controls.watchSettings(queue, (value, revision) => record.heard(value, revision), signal),
    );
  };
};
