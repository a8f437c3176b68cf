/** Resolves once `signal` aborts (at once if it has): where a reader or a watch waits for its end. */
export const whenAborted = (signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });

/**
 * Controllers aborted with one parent signal through one listener of its:
 * what a worker's pull loops of its jobs share, and the memory broker's
 * loops, instead of an `AbortSignal.any` each. On Node 20 every composite
 * leaves a weak reference in its sources' signals (the worker's, the
 * runtime's stop) that is never pruned: ~50 bytes for every job a
 * long-lived worker ever pulled. `link()` a controller for each, `unlink` it
 * once it is done with (or aborted).
 */
export class LinkedControllers {
  readonly #parent: AbortSignal;
  /** Each live controller, with what stops its listening to its own signal (`link(also)`). */
  readonly #live = new Map<AbortController, (() => void) | undefined>();

  constructor(parent: AbortSignal) {
    this.#parent = parent;
    parent.addEventListener(
      "abort",
      () => {
        // Each stops listening to its own signal too: a caller's signal outlives the runtime's stop.
        for (const [controller, stopListening] of this.#live) {
          stopListening?.();
          controller.abort(parent.reason);
        }
        this.#live.clear();
      },
      { once: true },
    );
  }

  /**
   * A controller aborted, with the parent's reason, when the parent aborts (at once if it has);
   * with `also`, aborted with its reason when it aborts first (one listener of its, removed by
   * `unlink`).
   */
  link(also?: AbortSignal): AbortController {
    const controller = new AbortController();
    if (this.#parent.aborted) controller.abort(this.#parent.reason);
    else if (also?.aborted) controller.abort(also.reason);
    else if (also) {
      const abort = () => controller.abort(also.reason);
      also.addEventListener("abort", abort, { once: true });
      this.#live.set(controller, () => also.removeEventListener("abort", abort));
    } else this.#live.set(controller, undefined);
    return controller;
  }

  unlink(controller: AbortController): void {
    this.#live.get(controller)?.();
    this.#live.delete(controller);
  }
}

/**
 * Reads raced with `signal`'s abort, through one listener for them all
 * (`release` removes it): `race(work)` is `work`'s value, or undefined once
 * `signal` aborts first (at once if it has). For reads that cannot
 * themselves be aborted and whose answer is of no use after the abort;
 * `work` goes on, and a failure of it after that is ignored. One listener,
 * not one per read: a pass that reads 32 records at once passed Node's
 * limit of 10 listeners (a warning on every worker's start).
 */
export const abortRace = (
  signal: AbortSignal,
): { race<T>(work: Promise<T>): Promise<T | undefined>; release(): void } => {
  let abort = () => {};
  const aborted = new Promise<undefined>((resolve) => {
    abort = () => resolve(undefined);
  });
  if (signal.aborted) abort();
  else signal.addEventListener("abort", abort, { once: true });
  return {
    race: (work) => Promise.race([work, aborted]),
    release: () => signal.removeEventListener("abort", abort),
  };
};
