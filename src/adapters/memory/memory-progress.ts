import type { MemoryServer } from "./memory-server.ts";

type Listener = (body: string) => void;

/**
 * Progress notes in memory, as core NATS carries them: delivered to whoever
 * listens on the job right now, on the same server (so runtimes sharing a
 * memory server see each other's notes), never stored.
 */
const listeners = new WeakMap<MemoryServer, Map<string, Set<Listener>>>();

export const publishProgress = (server: MemoryServer, jobId: string, body: string): void => {
  for (const listener of [...(listeners.get(server)?.get(jobId) ?? [])]) {
    // Asynchronous like a network delivery: a handler's progress() never runs watchers inline.
    queueMicrotask(() => listener(body));
  }
};

export const watchProgress = (
  server: MemoryServer,
  jobId: string,
  onNote: Listener,
  signal: AbortSignal,
): void => {
  if (signal.aborted) return;
  let byJob = listeners.get(server);
  if (!byJob) {
    byJob = new Map();
    listeners.set(server, byJob);
  }
  let set = byJob.get(jobId);
  if (!set) {
    set = new Set();
    byJob.set(jobId, set);
  }
  const listener: Listener = (body) => {
    if (!signal.aborted) onNote(body);
  };
  set.add(listener);
  signal.addEventListener(
    "abort",
    () => {
      set.delete(listener);
      if (set.size === 0) byJob.delete(jobId);
    },
    { once: true },
  );
};
