import type { Logger } from "../../kernel/logger.ts";

/** Sends one server-sent event: its name and a JSON body. */
export type Emit = (event: string, data: unknown) => void;

/** A comment line now and then: proxies and the page's reader see a silent stream is still alive. */
const keepAliveMs = 15_000;

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
): Response => {
  const gone = new AbortController();
  const stop = AbortSignal.any([signal, gone.signal]);
  const encoder = new TextEncoder();
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      const write = (text: string) => {
        if (stop.aborted) return;
        try {
          controller.enqueue(encoder.encode(text));
        } catch {
          gone.abort(); // the stream was closed under us: the client is gone
        }
      };
      const emit: Emit = (event, data) =>
        write(`id: ${++sent}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      const beat = setInterval(() => write(": keep-alive\n\n"), keepAliveMs);
      beat.unref();
      write(": open\n\n");
      void run(emit, stop)
        .catch((error: unknown) => {
          log.warn({ err: error }, "dashboard stream failed");
          emit("failure", { message: error instanceof Error ? error.message : String(error) });
        })
        .finally(() => {
          clearInterval(beat);
          gone.abort();
          try {
            controller.close();
          } catch {
            // already closed by a cancel
          }
        });
    },
    cancel() {
      gone.abort();
    },
  });
  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      "x-accel-buffering": "no",
    },
  });
};
