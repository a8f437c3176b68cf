import { createRequire } from "node:module";
import type { StatelyInspectionEvent } from "@statelyai/inspect";
import type { InspectionEvent } from "xstate";
import type { Logger } from "../kernel/logger.ts";
import type { RuntimeOptions } from "./options.ts";

export interface RuntimeInspector {
  readonly inspect: (event: InspectionEvent) => void;
  /** Sends what is still queued, then lets go of every socket and timer. */
  stop(): Promise<void>;
}

/** How long a relay that is not listening is left alone before the next dial. */
const RETRY_MS = 5000;
/** Events kept while no relay listens (the oldest go first), as the Stately adapter does. */
const MAX_QUEUED = 200;
/** Deeper parts of an event are elided: an actor's snapshot reaches the whole actor system. */
const MAX_DEPTH = 10;
/** How long `stop()` lets a dial in progress finish, to deliver what is queued. */
const STOP_WAIT_MS = 1000;

/**
 * `inspect: true` → the runtime's actors go to a Stately inspector relay over
 * WebSocket (`JETSTATE_INSPECT_URL`, default ws://127.0.0.1:8080; e.g.
 * `createInspectorServer()` from `@statelyai/inspect/server`, which bridges to
 * the inspector in a browser). Any object with an `inspect` function is used
 * as is.
 *
 * The events are made by `@statelyai/inspect`'s `createInspector`, but the
 * socket is ours (`RelayClient`): the package's `createWebSocketInspector`
 * cannot be stopped. It starts itself (a second `start()` opens a second
 * socket, and the first one is never closed), and after a failed dial it
 * waits 5 s on a timer that `stop()` does not cancel and then dials again,
 * so a process that used it never ends.
 */
export const createInspector = async (
  option: RuntimeOptions["inspect"],
  log: Logger,
): Promise<RuntimeInspector | undefined> => {
  if (!option) return undefined;
  if (option !== true) {
    const observer = option.inspect;
    return { inspect: (event) => observer(event), stop: async () => undefined };
  }
  const { createInspector: createStatelyInspector } = await import("@statelyai/inspect");
  const url = process.env.JETSTATE_INSPECT_URL ?? "ws://127.0.0.1:8080";
  const relay = new RelayClient(url, log);
  const inspector = createStatelyInspector(relay, { autoStart: false });
  relay.start();
  log.info({ url }, "XState inspector enabled: actors go to the Stately relay at this URL");
  return {
    inspect: (event) => inspector.inspect.next?.(event),
    stop: async () => {
      // The package converts each event on a zero-delay timer: let those already queued run.
      await new Promise((resolve) => setTimeout(resolve, 0));
      await relay.stop();
    },
  };
};

/** The little of `ws`'s client used here (the package ships no types of its own). */
interface WsSocket {
  readonly readyState: number;
  on(event: "open" | "close", listener: () => void): void;
  on(event: "error", listener: (error: Error) => void): void;
  send(data: string): void;
  close(): void;
  terminate(): void;
}
const CONNECTING = 0;
const OPEN = 1;
const loadWebSocket = (): (new (url: string) => WsSocket) =>
  (createRequire(import.meta.url)("ws") as { WebSocket: new (url: string) => WsSocket }).WebSocket;

/**
 * One socket to the relay at a time. While none is open, events queue (the
 * last `MAX_QUEUED`) and a dial is retried every `RETRY_MS` on an unref'd
 * timer; `stop()` clears the timer and closes the socket, so nothing of it
 * keeps the process alive.
 */
class RelayClient {
  readonly #url: string;
  readonly #log: Logger;
  readonly #WebSocket = loadWebSocket();
  #socket: WsSocket | undefined;
  #retry: NodeJS.Timeout | undefined;
  #queue: string[] = [];
  #stopped = false;
  /** Said once per spell of failed dials, not every 5 s. */
  #warned = false;

  constructor(url: string, log: Logger) {
    this.#url = url;
    this.#log = log;
  }

  start(): void {
    if (this.#socket || this.#stopped) return;
    const socket = new this.#WebSocket(this.#url);
    this.#socket = socket;
    socket.on("open", () => {
      if (this.#warned) this.#log.info({ url: this.#url }, "XState inspector relay reached");
      this.#warned = false;
      for (const text of this.#queue.splice(0)) socket.send(text);
    });
    socket.on("error", (error) => {
      if (this.#stopped || this.#warned) return;
      this.#warned = true;
      this.#log.warn(
        { url: this.#url, err: error, retryMs: RETRY_MS },
        `no XState inspector relay at ${this.#url} (${error.message}); trying again every ${RETRY_MS / 1000} s`,
      );
    });
    socket.on("close", () => {
      if (this.#socket === socket) this.#socket = undefined;
      if (this.#stopped) return;
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.start();
      }, RETRY_MS);
      this.#retry.unref();
    });
  }

  send(event: StatelyInspectionEvent): void {
    if (this.#stopped) return;
    const text = toJson(event);
    if (this.#socket?.readyState === OPEN) {
      this.#socket.send(text);
      return;
    }
    this.#queue.push(text);
    if (this.#queue.length > MAX_QUEUED) this.#queue.shift();
  }

  /**
   * A dial still in progress gets `STOP_WAIT_MS` to open, so that a short-lived
   * process still delivers what it queued; then the socket closes (an open one
   * sends what it holds before its close frame) and the retry timer is cleared.
   */
  async stop(): Promise<void> {
    const connecting = this.#socket;
    if (connecting && connecting.readyState === CONNECTING) {
      await new Promise<void>((resolve) => {
        const bound = setTimeout(resolve, STOP_WAIT_MS);
        const done = () => {
          clearTimeout(bound);
          resolve();
        };
        connecting.on("open", done);
        connecting.on("close", done);
      });
    }
    this.#stopped = true;
    clearTimeout(this.#retry);
    this.#queue = [];
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket?.readyState === OPEN) socket.close();
    else socket?.terminate();
  }
}

/** JSON with cycles and depth cut, functions named: what the Stately adapter sends. */
const toJson = (event: unknown): string => JSON.stringify(prune(event, 0, new Set()));

const prune = (value: unknown, depth: number, path: Set<object>): unknown => {
  if (typeof value === "function") return { type: value.name };
  if (typeof value === "bigint") return value.toString();
  if (value === null || typeof value !== "object") return value;
  if (path.has(value)) return "[Circular]";
  if (depth >= MAX_DEPTH) return Array.isArray(value) ? "[Array]" : "[Object]";
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") return prune(toJSON.call(value), depth, path);
  path.add(value);
  try {
    if (Array.isArray(value)) return value.map((item) => prune(item, depth + 1, path) ?? null);
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const pruned = prune(item, depth + 1, path);
      if (pruned !== undefined) out[key] = pruned;
    }
    return out;
  } finally {
    path.delete(value);
  }
};
