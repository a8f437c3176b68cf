/**
 * `jetstate-jobs jobs show` of a delayed job (the CLI built from the current
 * sources, run as a child process: test/harness/cli.ts): it shows when the
 * job runs, as the time the test asked for, read back by the CLI's own runtime.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type BuiltCli, buildCli, runCli } from "../harness/cli.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

describe("jetstate-jobs jobs show: a delayed job", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let cli: BuiltCli;
  beforeAll(async () => {
    [server, cli] = await Promise.all([startNatsServer(), buildCli()]);
    rt = await createRuntime({ servers: server.url, logger: silentLogger() });
  });
  afterAll(async () => {
    await rt?.stop();
    await cli?.remove();
    await server?.dispose();
  });

  it("shows its runAt, in text and in --json", async () => {
    const runAt = Date.now() + 3_600_000;
    const last = runAt + 60_000;
    const job = await rt.jobs.submit({ queue: "later", tasks: [1, 2], taskRunAt: [runAt, last] });
    const text = await runCli(cli.bin, ["jobs", "show", job.id], { NATS_URL: server.url });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(
      new RegExp(`runs at:\\s+${new Date(runAt).toISOString()} \\(in 59 m \\d+ s\\)`),
    );
    expect(text.stdout).toMatch(new RegExp(`last due:\\s+${new Date(last).toISOString()}`));
    const json = await runCli(cli.bin, ["jobs", "show", job.id, "--json"], { NATS_URL: server.url });
    expect(JSON.parse(json.stdout).job).toMatchObject({ id: job.id, runAt, dueUntil: last });
    await job.cancel("test over");
  });
});
