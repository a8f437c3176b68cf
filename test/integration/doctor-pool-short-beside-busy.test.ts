/**
 * `rt.admin.diagnose()` (the CLI's `doctor`, exit 5 on a problem) and a pool
 * really short while another queue's pool in the same permits stream is
 * written (4659f10). Doctor now reports a pool off its limit only when the
 * whole permits stream was unwritten between two looks 1 s apart. The
 * stream holds every queue's pools, so a service that re-applies another
 * queue's limit now and then (an autoscaler adjusting `maxConcurrency`,
 * instances restarting) keeps queue q's lost permits from ever being
 * reported: q's pool holds 0 of its 3 permits (its jobs will never run),
 * q's settings and pool unchanged between the looks, and doctor says "no
 * problem found". The oracle: every doctor run while q's pool is empty
 * names it, whatever another queue does. Fails on the current code: the
 * runs during the other queue's configures report no problem.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { useServerConnection } from "../harness/server-connection.ts";

const held = useServerConnection();
const runtimes: Runtime[] = [];
afterAll(async () => {
  for (const rt of runtimes.splice(0)) await rt.stop();
});

const runtime = async (): Promise<Runtime> => {
  const rt = await createRuntime({ servers: held.server.url, prefix: "busy", logger: silentLogger() });
  runtimes.push(rt);
  return rt;
};

it("a pool emptied for good is reported while another queue's pool is rewritten", async () => {
  const ops = await runtime();
  await ops.admin.provision(["q", "other"]);
  await ops.queues.configure("q", { maxConcurrency: 3 });
  await ops.queues.configure("other", { maxConcurrency: 50 });
  expect((await ops.admin.diagnose()).problems).toEqual([]);

  // q's permits lost from the stream (as doctor-queue-resources.test.ts breaks it): a real problem.
  const jsm = await jetstreamManager(held.nc);
  await jsm.streams.purge("busy_permits", { filter: "busy.permits.q.concurrency" });
  const alone = (await ops.admin.diagnose()).problems.map((p) => p.what);
  expect(alone.some((w) => w.includes("busy.permits.q.concurrency") && w.includes("holds 0 permit"))).toBe(
    true,
  );

  // Another service adjusts queue other's limit every 200 ms, as an autoscaler would.
  const other = await runtime();
  let stop = false;
  const adjusting = (async () => {
    for (let i = 0; !stop; i++) {
      await other.queues.configure("other", { maxConcurrency: 50 + (i % 2) });
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const runs: string[][] = [];
  try {
    for (let run = 0; run < 3; run++) runs.push((await ops.admin.diagnose()).problems.map((p) => p.what));
  } finally {
    stop = true;
    await adjusting;
  }
  // Fails on the current code: [false, false, false] (the permits stream was written between each run's looks).
  const named = (problems: string[]) =>
    problems.some((w) => w.includes("busy.permits.q.concurrency") && w.includes("holds 0 permit"));
  expect(runs.map(named)).toEqual([true, true, true]);
}, 60_000);
