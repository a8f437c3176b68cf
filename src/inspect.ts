import type { InspectionEvent } from "xstate";
import type { Logger } from "./logger.ts";
import type { RuntimeOptions } from "./options.ts";

export interface RuntimeInspector {
  readonly inspect: (event: InspectionEvent) => void;
  stop(): void;
}

/**
 * `inspect: true` → a WebSocket inspector (the Stately inspector connects to
 * it; `JETSTATE_INSPECT_URL`, default ws://127.0.0.1:8080). It is created only
 * when asked for: its adapter retries every 5 s while nobody listens and its
 * `stop()` does not cancel that timer (FACTS.md), so an idle one would keep
 * the process alive. Any object with an `inspect` function is used as is.
 */
export const createInspector = async (
  option: RuntimeOptions["inspect"],
  log: Logger,
): Promise<RuntimeInspector | undefined> => {
  if (!option) return undefined;
  if (option !== true) {
    const observer = option.inspect;
    return { inspect: (event) => observer(event), stop: () => undefined };
  }
  const { createWebSocketInspector } = await import("@statelyai/inspect");
  const url = process.env.JETSTATE_INSPECT_URL ?? "ws://127.0.0.1:8080";
  const inspector = createWebSocketInspector({ url });
  inspector.start();
  log.info({ url }, "XState inspector enabled (WebSocket); open the Stately inspector on this URL");
  return {
    inspect: (event) => inspector.inspect.next?.(event),
    stop: () => inspector.stop(),
  };
};
