import { setMaxListeners } from "node:events";

/**
 * A job's end as its worker sees it. The signal is made on its first read
 * (a handler that reads its own, a job's pull loop, a task waiting at a
 * limited or paused queue's gate): a lane job's worker on an open queue
 * reads none, and an abort's DOMException, made with its stack, cost ~1.5 %
 * of a small job's CPU. Any number of listeners: each task of the job
 * waiting at the gate is one (Node warned past 10).
 */
export class JobEnd {
  #controller: AbortController | undefined;
  #ended = false;

  get aborted(): boolean {
    return this.#ended;
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      setMaxListeners(0, this.#controller.signal);
      if (this.#ended) this.#controller.abort();
    }
    return this.#controller.signal;
  }

  abort(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#controller?.abort();
  }
}
