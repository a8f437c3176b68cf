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
import { waitUntil } from "../harness/wait.ts";

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

  // Another service re-applies queue other's limit, as an autoscaler would: here once each doctor
  // run has read the pools (its first look; a stream info request seen on the test's connection),
  // so the permits stream is written between that look and the next. A run whose second look
  // came before that write was stored proves nothing and is run again.
  const other = await runtime();
  const looks = held.nc.subscribe("$JS.API.STREAM.INFO.busy_permits");
  let lookCount = 0;
  const counting = (async () => {
    for await (const m of looks) if (m.string().includes("subjects_filter")) lookCount++;
  })();
  const runs: string[][] = [];
  try {
    for (let tries = 0; runs.length < 3; tries++) {
      expect(tries, "no doctor run saw the other queue written between its looks").toBeLessThan(10);
      const before = lookCount;
      const run = ops.admin.diagnose();
      await waitUntil(() => lookCount > before, {
        timeoutMs: 10_000,
        message: "doctor never read the pools",
      });
      await other.queues.configure("other", { maxConcurrency: 51 - (tries % 2) });
      // A second look the server had by now is delivered before the answer to this flush.
      await held.nc.flush();
      const between = lookCount === before + 1;
      const problems = (await run).problems.map((p) => p.what);
      if (between) runs.push(problems);
    }
  } finally {
    looks.unsubscribe();
    await counting;
  }
  // Fails on the current code: [false, false, false] (the permits stream was written between each run's looks).
  const named = (problems: string[]) =>
    problems.some((w) => w.includes("busy.permits.q.concurrency") && w.includes("holds 0 permit"));
  expect(runs.map(named)).toEqual([true, true, true]);
}, 60_000);
