/**
 * `jetstate-jobs queues …`, run as a user runs it (the CLI built from the
 * current sources, a child process) against a nats-server of this test's
 * own. The oracle is the queues bucket read raw by the test's own client.
 */
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuiltCli, buildCli, type CliRun, runCli } from "../harness/cli.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

describe("jetstate-jobs queues", () => {
  let server: NatsServerHandle;
  let cli: BuiltCli;
  let nc: NatsConnection;

  beforeAll(async () => {
    [server, cli] = await Promise.all([startNatsServer(), buildCli()]);
    nc = await connect({ servers: server.url });
  }, 60_000);
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
    await cli?.remove();
  });

  const run = (args: readonly string[]): Promise<CliRun> => runCli(cli.bin, args, { NATS_URL: server.url });
  const stored = async (queue: string) => {
    const entry = await (await new Kvm(nc).open("jetstate_queues")).get(queue);
    return entry?.json<Record<string, unknown>>();
  };

  it("configures, pauses, lists and resumes a queue; refuses a bad limit with exit 2 and stores nothing", async () => {
    const bad = await run(["queues", "configure", "mail", "--rate", "0", "--json"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/ratePerSecond/);

    const configured = await run([
      "queues",
      "configure",
      "mail",
      "--rate",
      "5",
      "--max-concurrency",
      "2",
      "--json",
    ]);
    expect(configured.code).toBe(0);
    expect(JSON.parse(configured.stdout)).toMatchObject({
      queue: "mail",
      paused: false,
      ratePerSecond: 5,
      maxConcurrency: 2,
    });
    expect(await stored("mail")).toMatchObject({ v: 1, paused: false, ratePerSecond: 5, maxConcurrency: 2 });

    expect((await run(["queues", "pause", "mail", "--json"])).code).toBe(0);
    expect(await stored("mail")).toMatchObject({ paused: true });
    const listed = JSON.parse((await run(["queues", "ls", "--json"])).stdout) as Array<{
      queue: string;
      paused: boolean;
    }>;
    expect(listed.map((q) => [q.queue, q.paused])).toEqual([["mail", true]]);

    const lifted = await run(["queues", "configure", "mail", "--rate", "none", "--json"]);
    expect(lifted.stderr).toBe("");
    expect(JSON.parse(lifted.stdout)).not.toHaveProperty("ratePerSecond");
    expect(await stored("mail")).not.toHaveProperty("ratePerSecond");

    const resumed = await run(["queues", "resume", "mail"]);
    expect(resumed.stdout).toMatch(/queue mail running/);
    expect(await stored("mail")).toMatchObject({ paused: false, maxConcurrency: 2 });
    const table = await run(["queues", "ls"]);
    expect(table.stdout).toMatch(/mail\s+running\s+-\s+2/);

    expect((await run(["queues", "configure", "mail", "--permit-lease-ms", "4000"])).code).toBe(2);
    expect((await run(["queues", "configure", "mail", "--permit-lease-ms", "30000"])).code).toBe(0);
    expect(await stored("mail")).toMatchObject({ maxConcurrency: 2, permitLeaseMs: 30_000 });
    expect((await run(["queues", "ls"])).stdout).toMatch(/mail\s+running\s+-\s+2\s+-\s+30 s/);
    expect((await run(["queues", "configure", "mail", "--permit-lease-ms", "none"])).code).toBe(0);
    expect(await stored("mail")).not.toHaveProperty("permitLeaseMs");
  }, 60_000);

  it("configures per-target limits; a bad one exits 2 and stores nothing; none lifts them", async () => {
    const bad = await run(["queues", "configure", "llm", "--per-target-max-concurrency", "0", "--json"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/perTarget/);
    expect(await stored("llm")).toBeUndefined();
    const set = await run([
      "queues",
      "configure",
      "llm",
      "--per-target-max-concurrency",
      "2",
      "--per-target-rate",
      "10",
      "--json",
    ]);
    expect(set.code).toBe(0);
    expect(await stored("llm")).toMatchObject({ perTarget: { maxConcurrency: 2, ratePerSecond: 10 } });
    expect((await run(["queues", "ls"])).stdout).toMatch(/llm\s+running\s+-\s+-\s+2 at once, 10\/s/);
    const lifted = await run(["queues", "configure", "llm", "--per-target-rate", "none", "--json"]);
    expect(lifted.code).toBe(0);
    expect((await stored("llm"))?.perTarget).toMatchObject({ maxConcurrency: 2 });
    expect((await stored("llm"))?.perTarget).not.toHaveProperty("ratePerSecond");
  }, 60_000);
});
