import { superviseLoop } from "../../effects/supervise-loop.ts";
import type { Logger } from "../../kernel/logger.ts";
import type { NatsContext } from "./nats-context.ts";

type Port = NatsContext["connection"];

/**
 * Notes on core NATS, never stored (a job's progress, the HTTP API's lease
 * notes): best effort by contract, so a note that cannot be sent (too
 * large, the client closing or away) is dropped, not raised; a lost note is
 * no lost work.
 */
export const publishNote = (port: Port, subject: string, body: string, log: Logger): void => {
  try {
    port.current()?.publish(subject, body);
  } catch (error) {
    log.debug({ err: error, subject }, "note dropped");
  }
};

/**
 * Calls `onNote` with each note on `subject` until `signal` aborts (or the
 * runtime stops): a core subscription, made again on each new client.
 */
export const watchNotes = (
  port: Port,
  subject: string,
  onNote: (body: string) => void,
  signal: AbortSignal,
  options: { readonly name: string; readonly log: Logger },
): void =>
  void superviseLoop(
    port,
    async (nc, s) => {
      const sub = nc.subscribe(subject);
      const stop = () => sub.unsubscribe();
      if (s.aborted) stop();
      s.addEventListener("abort", stop, { once: true });
      try {
        for await (const m of sub) onNote(m.string());
      } finally {
        s.removeEventListener("abort", stop);
      }
    },
    signal,
    options,
  );
