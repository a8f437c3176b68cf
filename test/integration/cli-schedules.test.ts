/**
 * `jetstate-jobs schedules ls | rm` and the FROM column of `jobs ls`, run as
 * a user runs the CLI (a child process on a built bundle). The oracle for
 * `rm` is a runtime of the test's own reading the bucket after it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type BuiltCli, buildCli, type CliRun, runCli } from "../harness/cli.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

describe("jetstate-jobs schedules", () => {
  let server: NatsServerHandle;
  let cli: BuiltCli;
  let rt: Runtime;
  beforeAll(async () => {
    [server, cli] = await Promise.all([startNatsServer(), buildCli()]);
    rt = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { cleanupIntervalMs: 0 } });
  }, 60_000);
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
    await cli?.remove();
  });
  const run = (args: readonly string[]): Promise<CliRun> => runCli(cli.bin, args, { NATS_URL: server.url });

  it("lists schedules, shows which job a tick submitted, and removes one", async () => {
    rt.workers.start({ queue: "clisched", handler: () => null });
    await rt.schedules.upsert({ id: "fast", everyMs: 500, job: { queue: "clisched", tasks: [1] } });
    await rt.schedules.upsert({
      id: "nightly",
      cron: "0 3 * * *",
      timezone: "Europe/Berlin",
      job: { queue: "clisched", tasks: [2] },
    });
    await waitUntil(async () => (await rt.jobs.list({ queue: "clisched" })).jobs.length > 0, {
      timeoutMs: 10_000,
      message: "a tick's job",
    });

    const text = await run(["schedules", "ls"]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^ID\s+RULE\s+QUEUE\s+MISSED\s+LAST TICK\s+NEXT TICK/);
    expect(text.stdout).toMatch(/fast\s+every 500 ms\s+clisched\s+skip/);
    expect(text.stdout).toMatch(
      /nightly\s+cron 0 3 \* \* \* \(Europe\/Berlin\)\s+clisched\s+skip\s+-\s+\d{4}-/,
    );
    const json = JSON.parse((await run(["schedules", "ls", "--json"])).stdout) as Array<{ id: string }>;
    expect(json.map((s) => s.id)).toEqual(["fast", "nightly"]);

    const jobs = await run(["jobs", "ls", "--queue", "clisched"]);
    expect(jobs.stdout).toMatch(/FROM/);
    expect(jobs.stdout).toMatch(/schedule fast @ \d{4}-\d\d-\d\dT/);

    const removed = await run(["schedules", "rm", "fast"]);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toMatch(/schedule fast removed/);
    expect((await rt.schedules.list()).map((s) => s.id)).toEqual(["nightly"]);
    const again = await run(["schedules", "rm", "fast"]);
    expect(again.code).toBe(3);
  }, 60_000);
});
