/**
 * A worker behind a firewall: it reaches jetstate only through the HTTP pull
 * API, with nothing but `fetch`. It reserves a batch from the active jobs of
 * its queue, processes it, heartbeats while it works, posts the results
 * (errors too: an error result still acks the task) and starts again.
 *
 *   JETSTATE_URL=http://127.0.0.1:8080 JETSTATE_TOKEN=… QUEUE=detect npx tsx examples/remote-worker.ts
 */
import { pathToFileURL } from "node:url";

export interface RemoteTask<Payload> {
  readonly id: string;
  readonly job_id: string;
  readonly index: number;
  readonly attempt: number;
  readonly payload: Payload;
  readonly receipt: string;
  readonly lease_ms: number;
}

export interface RemoteWorkerOptions<Payload, Result> {
  /** Where the API is mounted, e.g. `http://127.0.0.1:8080`. */
  readonly baseUrl: string;
  readonly token: string;
  readonly queue: string;
  readonly handler: (payload: Payload, task: RemoteTask<Payload>) => Promise<Result> | Result;
  /** Errors for which this returns true are posted as permanent (never retried). */
  readonly isPermanent?: (error: unknown) => boolean;
  readonly batchSize?: number;
  /** Longest pause between two empty polls (default 1000 ms; it starts at 50 ms). */
  readonly maxIdleMs?: number;
  readonly signal?: AbortSignal;
}

export interface RemoteWorkerStats {
  processed: number;
  failed: number;
  /** Answers the API did not take: the lease had ended, the job was over, or another answer was taken before. */
  dropped: number;
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** An error result's message: the API refuses an empty one (`throw new Error()` has none: its name then). */
const messageOf = (error: unknown): string =>
  (error instanceof Error ? error.message || error.name : String(error)) || "error without a message";

/** Waits `ms`, or less if `signal` aborts; its abort listener goes with it (the signal lives long). */
const pause = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });

/** Runs until `signal` aborts; resolves with what it did. */
export async function runRemoteWorker<Payload, Result>(
  options: RemoteWorkerOptions<Payload, Result>,
): Promise<RemoteWorkerStats> {
  const { baseUrl, token, queue, signal } = options;
  const stats: RemoteWorkerStats = { processed: 0, failed: 0, dropped: 0 };

  // One call; a 503 or a network error is retried with the same body (receipts make a retry safe).
  const call = async <T>(path: string, body: unknown): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await fetch(new URL(path, baseUrl), {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        const json = (await response.json()) as { error?: { code: string; message: string } };
        if (response.ok) return json as T;
        const error = new ApiError(response.status, json.error?.code ?? "unknown", json.error?.message ?? "");
        if (response.status < 500 || attempt >= 5) throw error;
      } catch (error) {
        if (error instanceof ApiError || attempt >= 5 || signal?.aborted) throw error;
      }
      await pause(100 * 2 ** attempt, signal);
    }
  };

  let idleMs = 50;
  while (!signal?.aborted) {
    let tasks: RemoteTask<Payload>[];
    try {
      ({ tasks } = await call<{ tasks: RemoteTask<Payload>[] }>(`/queues/${queue}/tasks`, {
        batch_size: options.batchSize ?? 10,
      }));
    } catch (error) {
      if (signal?.aborted) break;
      console.warn("reserve failed:", (error as Error).message);
      tasks = [];
    }
    if (tasks.length === 0) {
      await pause(idleMs, signal);
      idleMs = Math.min(idleMs * 2, options.maxIdleMs ?? 1000);
      continue;
    }
    idleMs = 50;

    // The receipt of each task, refreshed by every heartbeat.
    const receipts = new Map(tasks.map((t) => [t.id, t.receipt]));
    const heartbeat = setInterval(
      () => void extendLeases(tasks, receipts, call).catch(() => undefined),
      Math.max(200, Math.min(...tasks.map((t) => t.lease_ms)) / 3),
    );
    const answers = await Promise.all(
      tasks.map(async (task) => {
        try {
          const result = await options.handler(task.payload, task);
          // A result JSON cannot carry (a BigInt, a cycle) is this task's error: one item the
          // API refuses would have it refuse the whole request, every answer in it lost.
          let text: string | undefined;
          try {
            text = JSON.stringify(result ?? null);
          } catch (error) {
            return { task, error: { message: `result not sent: ${messageOf(error)}`, permanent: true } };
          }
          // A function or a symbol: JSON has no value for it.
          if (text === undefined)
            return { task, error: { message: "result not sent: not a JSON value", permanent: true } };
          return { task, result };
        } catch (error) {
          return {
            task,
            error: { message: messageOf(error), permanent: options.isPermanent?.(error) ?? false },
          };
        }
      }),
    );
    clearInterval(heartbeat);

    for (const jobId of new Set(tasks.map((t) => t.job_id))) {
      const mine = answers.filter((a) => a.task.job_id === jobId);
      const results = mine.map((a) => ({
        receipt: receipts.get(a.task.id),
        ...("error" in a ? { error: a.error } : { result: a.result ?? null }),
      }));
      try {
        const answer = await call<{ results: { status: string }[] }>(`/jobs/${jobId}/results`, { results });
        for (const r of answer.results) {
          if (r.status === "done") stats.processed++;
          else if (r.status === "expired") stats.dropped++;
          else stats.failed++;
        }
      } catch (error) {
        // 410: the job is over or every lease ended; the tasks went (or go) to someone else.
        // 409 already_answered: nothing was taken and a delivery was answered before with another
        // answer (a stale or replayed receipt). The same answers posted again (a retry of a POST
        // that landed, its response lost) are answered 200, each item `duplicate` with the first
        // answer's status, and counted above as that answer.
        stats.dropped += mine.length;
        if (!(error instanceof ApiError && (error.status === 410 || error.status === 409))) {
          console.warn("results not taken:", (error as Error).message);
        }
      }
    }
  }
  return stats;
}

async function extendLeases(
  tasks: readonly RemoteTask<unknown>[],
  receipts: Map<string, string>,
  call: <T>(path: string, body: unknown) => Promise<T>,
): Promise<void> {
  for (const jobId of new Set(tasks.map((t) => t.job_id))) {
    const ids = tasks.filter((t) => t.job_id === jobId).map((t) => t.id);
    const answer = await call<{ receipts: { id: string; status: string; receipt?: string }[] }>(
      `/jobs/${jobId}/heartbeat`,
      { receipts: ids.map((id) => receipts.get(id)) },
    );
    for (const r of answer.receipts) if (r.receipt) receipts.set(r.id, r.receipt);
  }
}

// Run as a program: a demo handler that doubles `payload.n`.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  process.once("SIGTERM", () => controller.abort());
  const stats = await runRemoteWorker<{ n: number }, number>({
    baseUrl: process.env.JETSTATE_URL ?? "http://127.0.0.1:8080",
    token: process.env.JETSTATE_TOKEN ?? "",
    queue: process.env.QUEUE ?? "detect",
    handler: (payload) => payload.n * 2,
    signal: controller.signal,
  });
  console.log("remote worker stopped", stats);
}
