import type { LoopGroup } from "../effects/loop-group.ts";

/**
 * Which queues' held (delayed) tasks this runtime moves. Each queue has its
 * own delayed stream (a user of queue A may not read B's), so a runtime
 * cannot pull them all: it follows a queue while one of its job actors is
 * the actor of a live job of that queue that holds tasks (its record has a
 * `runAt`). The job actors of a runtime are the jobs it submitted (followed
 * once committed: a held task is not moved before) and the ones it took over
 * or opened (docs/architecture.md, "Takeover"), so the rule is:
 *
 *   a held task is moved by every runtime that watches a live job of its
 *   queue with held tasks; the job's own supervisor always is one.
 *
 * A submitter that dies after its commit leaves its job to the runtime that
 * takes it over, which follows the queue from then on; the task is nak'ed
 * until due on the server, so it is moved on time if the takeover came
 * first, at once when it comes otherwise. A job's end (or its actor's stop)
 * lets go of the queue; the last one to let go ends that queue's pull loop.
 */
export class Movers {
  readonly #loops: LoopGroup;
  readonly #consume: (queue: string, signal: AbortSignal) => Promise<void>;
  /** Each followed queue's followers (one per job actor: a job redriven has two for a moment) and its loop's stop. */
  readonly #followed = new Map<string, { readonly by: Set<object>; readonly stop: AbortController }>();

  constructor(loops: LoopGroup, consume: (queue: string, signal: AbortSignal) => Promise<void>) {
    this.#loops = loops;
    this.#consume = consume;
  }

  /** Moves the queue's held tasks until the function returned is called (once or more: the same). */
  follow(queue: string): () => void {
    let followed = this.#followed.get(queue);
    if (!followed) {
      const stop = new AbortController();
      followed = { by: new Set(), stop };
      this.#followed.set(queue, followed);
      // The loop group's stop reaches the loop through one listener, removed as the loop ends:
      // not an `AbortSignal.any` with the group's signal, which on Node 20 leaves a weak reference
      // in it for good, one per queue followed and let go (a delayed job after another: one a job).
      this.#loops.run(`mover:${queue}`, (signal) => {
        const onStop = () => stop.abort(signal.reason);
        if (signal.aborted) onStop();
        else signal.addEventListener("abort", onStop, { once: true });
        return this.#consume(queue, stop.signal).finally(() => signal.removeEventListener("abort", onStop));
      });
    }
    const follower = {};
    followed.by.add(follower);
    const mine = followed;
    return () => {
      mine.by.delete(follower);
      if (mine.by.size > 0 || this.#followed.get(queue) !== mine) return;
      this.#followed.delete(queue);
      mine.stop.abort();
    };
  }
}
