/**
 * `rt.admin.diagnose()` (the CLI's `doctor`, exit 5 on a problem) and the
 * presence bucket (`<prefix>_presence`), which doctor counts among the
 * stores every runtime needs. It is made by a native worker's first
 * announcement, in the server's memory: a fleet whose workers all lease
 * tasks through the HTTP API never makes it, and a server restart loses it
 * until each live worker's next announcement (a third of `presenceMs`). In
 * both, nothing is wrong, and doctor says "stream KV_<prefix>_presence is
 * missing" with `rt.admin.provision()` as the fix. (The check is older than
 * the queues' checks; found while attacking them with the HTTP API and a
 * server restart.) The oracle: the jobs run to their end, and workers
 * announced before the restart are alive and working after it.
 */
import { afterAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createHttpApi } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { serveOnLoopback } from "../harness/http-server.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { waitUntil, within } from "../harness/wait.ts";

const held = useServerConnection();
const runtimes: Runtime[] = [];
afterAll(async () => {
  for (const rt of runtimes.splice(0)) await rt.stop();
});

const runtime = async (prefix: string, presenceMs?: number): Promise<Runtime> => {
  const rt = await createRuntime({
    servers: held.server.url,
    prefix,
    logger: silentLogger(),
    ...(presenceMs === undefined ? {} : { presenceMs }),
  });
  runtimes.push(rt);
  return rt;
};

const token = "doctor-http-worker-0123456789";

it("every worker on the HTTP API (none native): its jobs end, and doctor finds no problem", async () => {
  const rt = await runtime("remote");
  const api = createHttpApi(rt, {
    tokens: { [token]: { identity: "gpu-1", role: "worker", queues: ["q"] } },
  });
  const http = await serveOnLoopback(api.fetch);
  try {
    const post = async (path: string, body: unknown) => {
      const answer = await fetch(`${http.baseUrl}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      expect(answer.status, path).toBe(200);
      return (await answer.json()) as { tasks: { job_id: string; receipt: string; payload: number }[] };
    };
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [1, 2] });
    let answered = 0;
    await waitUntil(
      async () => {
        const { tasks } = await post("/queues/q/tasks", { batch_size: 2 });
        for (const t of tasks) {
          await post(`/jobs/${t.job_id}/results`, { results: [{ receipt: t.receipt, result: t.payload }] });
          answered++;
        }
        return answered === 2;
      },
      { timeoutMs: 10_000, intervalMs: 50, message: "both tasks leased and answered over HTTP" },
    );
    expect(await within(job.done(), 10_000)).toMatchObject({ status: "succeeded" });
    // Fails on the current code: "stream KV_remote_presence is missing" (no native worker ever
    // announced itself), fix "run `rt.admin.provision()`".
    expect((await rt.admin.diagnose()).problems).toEqual([]);
  } finally {
    await http.close();
  }
});

it("the server restarted under a live worker: it works on, and doctor finds no problem", async () => {
  // A worker announcing every 20 s (presenceMs 60 s, within the option's range).
  const rt = await runtime("restarted", 60_000);
  const worker = rt.workers.start<number, number>({ queue: "q", handler: (t) => t.payload });
  try {
    const before = await rt.jobs.submit<number, number>({ queue: "q", tasks: [1] });
    expect(await within(before.done(), 10_000)).toMatchObject({ status: "succeeded" });
    expect((await rt.admin.diagnose()).problems).toEqual([]);

    await held.server.restart();
    const after = await rt.jobs.submit<number, number>({ queue: "q", tasks: [2] });
    expect(await within(after.done(), 15_000)).toMatchObject({ status: "succeeded" });
    // Fails on the current code: "stream KV_restarted_presence is missing" until the worker's next
    // announcement, up to 20 s after the restart, with `rt.admin.provision()` as the fix.
    expect((await rt.admin.diagnose()).problems).toEqual([]);
  } finally {
    await worker.stop();
  }
});
