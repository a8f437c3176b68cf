import type { Logger } from "../../kernel/logger.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";

/** Sends one server-sent event: its name and a JSON body. */
export type Emit = (event: string, data: unknown) => void;

/** A comment line now and then: proxies and the page's reader see a silent stream is still alive. */
const keepAliveMs = 15_000;
/** Bytes the stream queues before it counts the client as slow. */
const highWaterBytes = 16 * 1024;
/**
 * Bytes queued for a client that stopped reading before its stream is
 * closed: what it missed is not replayed, so a page that falls this far
 * behind reconnects and reads the overview again rather than hold memory.
 */
export const maxQueuedBytes = 1024 * 1024;

/**
 * The event streams open per token identity, each one a `rt.jobs.events()`
 * reader (an ordered consumer on NATS): at most `perIdentity` at once (429
 * beyond), and every one of them ended by `stopping` (see `settled`).
 */
export class StreamSlots {
  readonly #open = new Map<string, number>();
  readonly #running = new Set<Promise<void>>();
  constructor(readonly perIdentity: number) {}

  /** Counts a stream for `identity` until `run` settles; 429 `too_many_streams` when it has none left. */
  take(identity: string): (running: Promise<void>) => void {
    const open = this.#open.get(identity) ?? 0;
    if (open >= this.perIdentity)
      throw new HttpError(
        429,
        ErrorCode.tooManyStreams,
        `${identity} has ${open} dashboard streams open, the most allowed: close one first`,
      );
    this.#open.set(identity, open + 1);
    return (running) => {
      const tracked = running.finally(() => {
        this.#running.delete(tracked);
        const left = (this.#open.get(identity) ?? 1) - 1;
        if (left === 0) this.#open.delete(identity);
        else this.#open.set(identity, left);
      });
      this.#running.add(tracked);
    };
  }

  /** Resolves once every stream open now has ended. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#running]);
  }
}

/**
 * A `text/event-stream` response fed by `run` until it returns, the client
 * goes away (the stream is cancelled) or `signal` aborts; `run` is handed a
 * signal that aborts in all three cases and must end when it does. The page
 * reads it with `fetch` (so the bearer token goes in a header), not
 * `EventSource`, which cannot send one.
 */
export const eventStream = (
  signal: AbortSignal,
  log: Logger,
  run: (emit: Emit, signal: AbortSignal) => Promise<void>,
  started: (running: Promise<void>) => void = () => {},
): Response => {
  const gone = new AbortController();
  const stop = AbortSignal.any([signal, gone.signal]);
  const encoder = new TextEncoder();
  let sent = 0;
  let slow = false;
  const stream = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        const write = (text: string) => {
          if (stop.aborted) return;
          try {
            controller.enqueue(encoder.encode(text));
          } catch {
            gone.abort(); // the stream was closed under us: the client is gone
          }
          if ((controller.desiredSize ?? 0) < -maxQueuedBytes) {
            log.warn(
              { queuedBytes: highWaterBytes - (controller.desiredSize ?? 0) },
              "dashboard stream closed: its client stopped reading",
            );
            slow = true;
            gone.abort();
            // Its queue is dropped now, not once `run` has heeded the abort: an error frees it.
            controller.error(new Error("the client stopped reading"));
          }
        };
        const emit: Emit = (event, data) =>
          write(`id: ${++sent}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        const beat = setInterval(() => write(": keep-alive\n\n"), keepAliveMs);
        beat.unref();
        write(": open\n\n");
        const running = run(emit, stop)
          .catch((error: unknown) => {
            log.warn({ err: error }, "dashboard stream failed");
            emit("failure", { message: error instanceof Error ? error.message : String(error) });
          })
          .finally(() => {
            clearInterval(beat);
            gone.abort();
            try {
              // A slow client's stream has already ended in an error.
              if (!slow) controller.close();
            } catch {
              // already closed by a cancel
            }
          });
        started(running);
      },
      cancel() {
        gone.abort();
      },
    },
    new ByteLengthQueuingStrategy({ highWaterMark: highWaterBytes }),
  );
  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      "x-accel-buffering": "no",
    },
  });
};
