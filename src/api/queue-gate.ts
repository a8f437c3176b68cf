import { createHash } from "node:crypto";
import { setMaxListeners } from "node:events";
import { createActor } from "xstate";
import type { Permit, PermitKind, QueueControls, TargetPool } from "../adapters/queue-controls.ts";
import { untilDone } from "../effects/retry.ts";
import type { Logger } from "../kernel/logger.ts";
import {
  decodeQueueSettings,
  defaultPermitLeaseMs,
  openQueue,
  permitLeaseOf,
  type QueueSettings,
} from "../kernel/queue-settings.ts";
import { LinkedControllers } from "../kernel/signals.ts";
import { type QueueState, queueMachine } from "../machines/queue.machine.ts";
import { KeptQueueRecord } from "./kept-queue-record.ts";

/** What a task holds while it runs: its concurrency permit, if the queue has a cap. */
export interface GatePass {
  /**
   * The handler was called: the rate permits go back, free again in 1 s.
   * Not at the take: tasks that take their permits in one turn start one
   * after the other, and a permit freed 1 s after its take could start a
   * task less than 1 s after the start of the one that took it.
   */
  started(): void;
  /** The task ended: its concurrency permits go back at once (and rate permits never started, in 1 s). */
  end(): void;
}

/** A controller whose signal takes any number of listeners (one per task waiting). */
const manyListeners = (): AbortController => {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
};

/** Resolves once either signal aborts, leaving no listener on the other. */
const eitherAborted = (a: AbortSignal, b: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const done = () => {
      a.removeEventListener("abort", done);
      b.removeEventListener("abort", done);
      resolve();
    };
    a.addEventListener("abort", done, { once: true });
    b.addEventListener("abort", done, { once: true });
  });

const noPermit: GatePass = { started: () => undefined, end: () => undefined };

/** How the task waiting at the gate keeps its own lease: `keep` every `everyMs`. */
export interface TaskLeaseKeeper {
  readonly keep: () => void;
  readonly everyMs: number;
}

/**
 * How often a held permit's lease is renewed: three times per default lease,
 * the shortest a queue may have. A longer one (`permitLeaseMs`) leaves a
 * handler that holds the event loop that much longer before it is lost.
 */
const keepEveryMs = Math.floor(defaultPermitLeaseMs / 3);

/**
 * Pauses between failed permit takes (the server away, or a pool's consumer
 * this worker may not make): the task waits, it is not dropped. Growing to
 * `retryTake.maxMs`: at a fixed 500 ms a refused create was sent, and
 * warned of, twice a second per task waiting.
 */
const retryTake = { initialMs: 500, maxMs: 10_000 } as const;

/**
 * A worker's view of its queue's controls (src/machines/queue.machine.ts
 * draws it): the settings, read once and then watched, and the permits taken
 * before each task starts. `enter` answers "paused" (the task is held),
 * undefined (the worker stops) or a pass; an open queue with no limits gives
 * its pass at once, with no round trip.
 */
export class QueueGate {
  #settings: QueueSettings;
  #revision = 0;
  /** What the last settings applied said (undefined: none stored). */
  #value: string | undefined;
  /** loading → open | limited | paused: what a task arriving now meets. */
  readonly #life = createActor(queueMachine).start();
  readonly #ready: Promise<void>;
  /** `#ready` has settled. */
  #isReady = false;
  #resumed = manyListeners();
  /**
   * Aborted (and replaced) at each write of the settings seen. Any number
   * of listeners, from the first: a queue never configured never replaces
   * it, and a stopping worker's tasks each wait on it (`whenPaused`).
   */
  #changed = manyListeners();
  /**
   * A task's wait for permits, ended by the worker's signal or by `#changed`: not an
   * `AbortSignal.any` of the two, which left a weak reference in the worker's signal for
   * good (Node 20), one per task of a limited queue. By the worker's signal: each wait
   * listens to `#changed` (which takes any number of listeners) until it ends.
   */
  readonly #waitLinks = new WeakMap<AbortSignal, LinkedControllers>();

  #linksOf(signal: AbortSignal): LinkedControllers {
    const known = this.#waitLinks.get(signal);
    if (known) return known;
    const links = new LinkedControllers(signal);
    this.#waitLinks.set(signal, links);
    return links;
  }
  readonly #controls: QueueControls;
  readonly #queue: string;
  readonly #log: Logger;
  /** A take failed and none has succeeded since: the failure was warned of once. */
  #takeFailing = false;
  /** The record as last seen, written back when it vanishes (a server back empty). */
  readonly #kept: KeptQueueRecord;

  constructor(controls: QueueControls, queue: string, log: Logger, signal: AbortSignal) {
    this.#controls = controls;
    this.#queue = queue;
    this.#log = log;
    this.#settings = openQueue(queue);
    this.#kept = new KeptQueueRecord(controls, queue, log, signal);
    this.#resumed.abort();
    // The stored settings before the first task: a paused queue never starts one by a race.
    this.#ready = controls.getSettings(queue).then(
      (found) => {
        if (found) this.#apply(found.value, found.revision);
        // Never configured: open, unless the watch said otherwise meanwhile.
        else if (this.#life.getSnapshot().value === "loading")
          this.#life.send({ type: "settings.seen", paused: false, limited: false });
      },
      (error) => {
        // Failed as its worker stopped (the stop's abort, or a deadline past it): nothing to say,
        // and its machine has stopped.
        if (signal.aborted) return;
        log.warn({ err: error }, "queue settings not read; the watch will bring them");
        this.#life.send({ type: "settings.unread" });
      },
    );
    void this.#ready.then(() => {
      this.#isReady = true;
    });
    signal.addEventListener("abort", () => this.#life.stop(), { once: true });
    this.watching = controls
      .watchSettings(queue, (value, revision) => this.#apply(value, revision, "watch"), signal)
      .catch((error) => log.warn({ err: error }, "queue settings watch failed"));
  }

  /** The first read of the settings has settled (it never rejects). */
  get ready(): Promise<void> {
    return this.#ready;
  }

  /** The watch's loop: the worker's stop waits for it. */
  readonly watching: Promise<void>;

  /**
   * The pass of a queue read and open (no pause, no limits), at once; undefined
   * otherwise (`enter` then waits for what it asks). Most tasks meet an open
   * queue: they start without an async call and its promises (`enter` is one
   * whatever it answers).
   */
  openPass(): GatePass | undefined {
    return this.#isReady && this.#life.getSnapshot().value === "open" ? noPermit : undefined;
  }

  /**
   * Waits for what the queue's limits ask before a task starts: a
   * concurrency permit (held until `end()`), then a rate permit (given back
   * at once, free again in 1 s). "paused" when the queue is paused, before
   * or after the wait (a permit taken is given back then).
   */
  async enter(
    signal: AbortSignal,
    lease?: TaskLeaseKeeper,
    target?: string,
  ): Promise<GatePass | "paused" | undefined> {
    await this.#ready;
    let keeper: NodeJS.Timeout | undefined;
    try {
      for (;;) {
        const state = this.#life.getSnapshot().value;
        if (state === "paused") return "paused";
        if (state !== "limited") return noPermit;
        // The task waits for its permits holding its lease: not redelivered meanwhile, no delivery spent.
        if (lease && keeper === undefined) keeper = setInterval(lease.keep, lease.everyMs);
        // A new write of the settings ends the wait: a limit lifted or changed, a pause, is obeyed
        // by the tasks already waiting (a lifted limit's pool is purged: they would wait for good).
        const links = this.#linksOf(signal);
        const waiting = links.link(this.#changed.signal);
        const passed = await this.#permits(waiting.signal, target).finally(() => links.unlink(waiting));
        if (passed !== undefined || signal.aborted) return passed;
      }
    } finally {
      clearInterval(keeper);
    }
  }

  /**
   * The concurrency permits first, the target's before the queue's (a task
   * waiting for its target's holds none of the queue's, which other
   * targets' tasks may take); the rate permits last, when nothing is left to
   * wait for: each is spent at its task's start.
   */
  async #permits(signal: AbortSignal, target: string | undefined): Promise<GatePass | "paused" | undefined> {
    const { maxConcurrency, ratePerSecond, perTarget } = this.#settings;
    const leaseMs = permitLeaseOf(this.#settings);
    const held: Permit[] = [];
    const rates: Permit[] = [];
    const giveBack = () => {
      for (const p of [...held, ...rates]) p.release();
      return undefined;
    };
    const hash = perTarget && target !== undefined ? targetHash(target) : undefined;
    const pool = (size: number | undefined): TargetPool | undefined =>
      perTarget && hash !== undefined && size !== undefined
        ? { target: hash, round: perTarget.round, size, leaseMs }
        : undefined;
    // The target's permits before the queue's: a task waiting for its target's rate permit held
    // a queue's concurrency permit, and the workers of other targets could start nothing meanwhile.
    const wanted: Array<[PermitKind, number | undefined, TargetPool | undefined]> = [
      ["concurrency", pool(perTarget?.maxConcurrency)?.size, pool(perTarget?.maxConcurrency)],
      ["rate", pool(perTarget?.ratePerSecond)?.size, pool(perTarget?.ratePerSecond)],
      ["concurrency", maxConcurrency, undefined],
      ["rate", ratePerSecond, undefined],
    ];
    // What is taken is renewed while the next is waited for (a permit is leased: one not renewed
    // goes to another task after its lease, and one task more than the limit would run).
    const keeper = setInterval(() => {
      for (const p of [...held, ...rates]) p.keep();
    }, keepEveryMs);
    keeper.unref();
    const takingSince = Date.now();
    try {
      for (const [kind, limit, from] of wanted) {
        if (limit === undefined) continue;
        const permit = await this.#take(kind, signal, leaseMs, from);
        if (permit === undefined) return giveBack();
        (kind === "rate" ? rates : held).push(permit);
      }
    } finally {
      clearInterval(keeper);
    }
    if (this.#life.getSnapshot().value === "paused") {
      giveBack();
      return "paused";
    }
    // The rate permits are spent at the handler's start (`started`), the concurrency ones held to the end.
    return held.length > 0 || rates.length > 0
      ? permitsPass(held, rates, Date.now() - takingSince >= keepEveryMs / 2)
      : noPermit;
  }

  /** Whether the queue is paused as this worker knows it now. */
  get paused(): boolean {
    return this.state === "paused";
  }

  /** The queue's state as this worker knows it now (its queue machine's). */
  get state(): QueueState {
    return this.#life.getSnapshot().value;
  }

  /** Resolves once the queue is not paused (or `signal` aborts). */
  whenResumed(signal: AbortSignal): Promise<void> {
    const resumed = this.#resumed.signal;
    if (resumed.aborted || signal.aborted) return Promise.resolve();
    return eitherAborted(resumed, signal);
  }

  /** Resolves once the queue is paused, as this worker hears it (or `signal` aborts). */
  async whenPaused(signal: AbortSignal): Promise<void> {
    while (!this.paused && !signal.aborted) await eitherAborted(this.#changed.signal, signal);
  }

  async #take(
    kind: PermitKind,
    signal: AbortSignal,
    leaseMs: number,
    pool?: TargetPool,
  ): Promise<Permit | undefined> {
    let permit: Permit | undefined;
    await untilDone(
      async (attempt) => {
        permit = pool
          ? await this.#controls.takeTargetPermit(this.#queue, pool, kind, attempt)
          : await this.#controls.takePermit(this.#queue, kind, attempt, leaseMs);
        if (this.#takeFailing) this.#log.info({ kind }, "permits taken again");
        this.#takeFailing = false;
      },
      retryTake,
      signal,
      () => true,
      (error) => {
        // Once until a take succeeds: every task waiting fails alike.
        if (!this.#takeFailing)
          this.#log.warn({ err: error, kind }, "permit not taken; trying again, backing off (said once)");
        this.#takeFailing = true;
      },
    );
    return permit;
  }

  /**
   * Applies the settings of `revision`, unless a later one was, or this one.
   * The watch delivers in the store's order, so a revision below the last
   * one applied coming from it means the store was made again (a server
   * back with an empty store): the order starts again from it. A revision is
   * the bucket's sequence, shared by every queue, so after such a reset an
   * equal one may be another write: it is one only with the same value. A
   * read (`getSettings`, at the start) may be older than what the watch
   * brought.
   */
  #apply(value: string | undefined, revision: number, from: "read" | "watch" = "read"): void {
    if (revision === this.#revision && value === this.#value) return;
    if (revision < this.#revision && from === "read") return;
    // Gone with no deletion marker (the store lost): written back, and the limits held meanwhile.
    // Applied, the queue ran open, as many handlers as its workers had room for.
    if (this.#kept.heard(value, revision) === "vanished") return;
    this.#value = value;
    if (revision < this.#revision)
      this.#log.info(
        { revision, before: this.#revision },
        "queue settings' revision went back (the store was made again): applied",
      );
    this.#revision = revision;
    const wasPaused = this.#life.getSnapshot().value === "paused";
    if (value === undefined) this.#settings = openQueue(this.#queue);
    else {
      const { settings, readable } = decodeQueueSettings(this.#queue, value);
      if (!readable) this.#log.warn({ revision }, "queue settings unreadable; the queue runs without limits");
      this.#settings = settings;
    }
    const { paused, ratePerSecond, maxConcurrency, perTarget } = this.#settings;
    this.#life.send({
      type: "settings.seen",
      paused,
      limited: ratePerSecond !== undefined || maxConcurrency !== undefined || perTarget !== undefined,
    });
    this.#changed.abort();
    this.#changed = manyListeners();
    if (paused && !wasPaused) {
      this.#resumed = manyListeners();
      this.#log.info("queue paused");
    } else if (!paused && wasPaused) {
      this.#resumed.abort();
      this.#log.info("queue resumed");
    }
  }
}

/**
 * The permits a task holds: its concurrency permits (the target's, the
 * queue's) renewed while it runs and given back once when it ends; its rate
 * permits given back, free again in 1 s, once its handler was called.
 */
const permitsPass = (held: readonly Permit[], rates: readonly Permit[], waited: boolean): GatePass => {
  // Kept at once after a wait: the wait's keeper stopped up to a keep period after its last keep,
  // and the pass's first comes a period later (a permit's lease left with a second's margin, a
  // stall of the event loop then lost it). Not after takes answered at once: a keep a task.
  if (waited) for (const p of held) p.keep();
  const keeper =
    held.length > 0
      ? setInterval(() => {
          for (const p of held) p.keep();
        }, keepEveryMs)
      : undefined;
  keeper?.unref();
  let started = false;
  let ended = false;
  const start = () => {
    if (started) return;
    started = true;
    for (const p of rates) p.release(1000);
  };
  return {
    started: start,
    end: () => {
      if (ended) return;
      ended = true;
      clearInterval(keeper);
      for (const p of held) p.release();
      start();
    },
  };
};

/** A target's name in its pools' subjects: a hash (a target is a URL or any string), 16 hex digits. */
const targetHash = (target: string): string => createHash("sha256").update(target).digest("hex").slice(0, 16);
