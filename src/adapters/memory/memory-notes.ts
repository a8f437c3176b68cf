import type { MemoryServerState } from "./memory-server.ts";

type Listener = (body: string) => void;

/**
 * Notes in memory (a job's progress, the HTTP API's lease notes), as core
 * NATS carries them: delivered to whoever listens on the subject right now,
 * on the same server (so runtimes sharing a memory server see each other's
 * notes), never stored.
 */
const listeners = new WeakMap<MemoryServerState, Map<string, Set<Listener>>>();

export const publishNote = (server: MemoryServerState, subject: string, body: string): void => {
  for (const listener of [...(listeners.get(server)?.get(subject) ?? [])]) {
    // Asynchronous like a network delivery: a handler's progress() never runs watchers inline.
    queueMicrotask(() => listener(body));
  }
};

export const watchNotes = (
  server: MemoryServerState,
  subject: string,
  onNote: Listener,
  signal: AbortSignal,
): void => {
  if (signal.aborted) return;
  let bySubject = listeners.get(server);
  if (!bySubject) {
    bySubject = new Map();
    listeners.set(server, bySubject);
  }
  let set = bySubject.get(subject);
  if (!set) {
    set = new Set();
    bySubject.set(subject, set);
  }
  const listener: Listener = (body) => {
    if (!signal.aborted) onNote(body);
  };
  set.add(listener);
  signal.addEventListener(
    "abort",
    () => {
      set.delete(listener);
      if (set.size === 0) bySubject.delete(subject);
    },
    { once: true },
  );
};
