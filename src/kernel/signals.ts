/** Resolves once `signal` aborts (at once if it has): where a reader or a watch waits for its end. */
export const whenAborted = (signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });

/**
 * Controllers aborted with one parent signal through one listener of its:
 * what a worker's pull loops of its jobs share, instead of an
 * `AbortSignal.any` each. On Node 20 every composite leaves a weak reference
 * in its sources' signals (the worker's, the runtime's stop) that is never
 * pruned: ~50 bytes for every job a long-lived worker ever pulled. `link()`
 * a controller for each, `unlink` it once it is done with (or aborted).
 */
export class LinkedControllers {
  readonly #parent: AbortSignal;
  readonly #live = new Set<AbortController>();

  constructor(parent: AbortSignal) {
    this.#parent = parent;
    parent.addEventListener(
      "abort",
      () => {
        for (const controller of this.#live) controller.abort(parent.reason);
        this.#live.clear();
      },
      { once: true },
    );
  }

  /** A controller aborted, with the parent's reason, when the parent aborts (at once if it has). */
  link(): AbortController {
    const controller = new AbortController();
    if (this.#parent.aborted) controller.abort(this.#parent.reason);
    else this.#live.add(controller);
    return controller;
  }

  unlink(controller: AbortController): void {
    this.#live.delete(controller);
  }
}
