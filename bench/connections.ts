/**
 * Connections: one runtime submits a 1000-task job that 8 workers of the same
 * runtime process. The server's view is what counts: the most client
 * connections open at once during the job (`/connz`, polled), and how many
 * connections the server accepted from the runtime's start to its stop
 * (`/varz` total_connections). Both must be 1.
 */
import type { NatsServerHandle } from "../test/harness/nats-server.ts";
import { freshRuntime } from "./jetstate-e2e.ts";
import { varzConnections } from "./lib/server.ts";
import { makePayloads, uniqueName } from "./lib/tasks.ts";

export interface ConnectionsResult {
  readonly tasks: number;
  readonly workers: number;
  /** Most connections `/connz` showed while the job ran (polled every 10 ms). */
  readonly maxOpenDuringJob: number;
  readonly samples: number;
  /** Connections the server accepted between just before `createRuntime` and after `rt.stop()`. */
  readonly acceptedForRuntime: number;
  readonly ok: boolean;
}

export async function measureConnections(server: NatsServerHandle): Promise<ConnectionsResult> {
  // Connections closed by earlier sections may take the server a moment to let go of.
  let before = await varzConnections(server);
  for (let tries = 0; tries < 100 && before.open !== 0; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    before = await varzConnections(server);
  }
  if (before.open !== 0)
    throw new Error(`connections: ${before.open} client connections open before the runtime`);
  const rt = await freshRuntime(server.url, "conn", 0);
  let maxOpen = 0;
  let samples = 0;
  try {
    const queue = uniqueName("q", "conn");
    const workers = 8;
    for (let w = 0; w < workers; w++) rt.workers.start({ queue, concurrency: 8, handler: () => null });
    let running = true;
    const poll = (async () => {
      while (running) {
        maxOpen = Math.max(maxOpen, await server.connectionCount());
        samples++;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    const tasks = 1000;
    const job = await rt.jobs.submit({ queue, tasks: makePayloads(tasks) });
    const final = await job.done();
    running = false;
    await poll;
    if (final.status !== "succeeded") throw new Error(`connections: job ended ${final.status}`);
    await rt.stop(); // idempotent: the finally below is for the failure paths
    const after = await varzConnections(server);
    const accepted = after.total - before.total;
    return {
      tasks,
      workers,
      maxOpenDuringJob: maxOpen,
      samples,
      acceptedForRuntime: accepted,
      ok: maxOpen === 1 && accepted === 1,
    };
  } finally {
    await rt.stop();
  }
}
