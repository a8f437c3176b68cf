/**
 * `jetstate-jobs flows show <id>`: the built CLI against a private
 * nats-server. The oracle is the flow record read raw (the test's own KV
 * client): the CLI shows each job of the flow as stored.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type BuiltCli, buildCli, runCli } from "../harness/cli.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

describe("jetstate-jobs flows show", () => {
  let server: NatsServerHandle;
  let cli: BuiltCli;
  let rt: Runtime;
  beforeAll(async () => {
    [server, cli] = await Promise.all([startNatsServer(), buildCli()]);
    rt = await createRuntime({ servers: server.url, logger: silentLogger() });
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });

  it("shows a flow's status and each job as stored; exit 3 for an unknown flow", async () => {
    rt.workers.start({ queue: "kids", handler: (task) => task.payload });
    const flow = await rt.flows.submit({
      id: "cli-flow",
      parent: { queue: "nobody-serves", tasks: [1] },
      children: [{ queue: "kids", tasks: [1, 2] }],
    });
    // The child ends; the parent waits on a queue nobody serves.
    while (flow.snapshot().nodes.parent?.status !== "running") await new Promise((r) => setTimeout(r, 20));
    const nc = await connect({ servers: server.url });
    const raw = (await (await new Kvm(nc).open("jetstate_flows")).get("cli-flow"))?.json<{
      status: string;
      nodes: Record<string, { jobId: string; status: string; dependsOn: string[] }>;
    }>();
    await nc.close();

    const shown = await runCli(cli.bin, ["flows", "show", "cli-flow", "--json"], { NATS_URL: server.url });
    expect(shown.code, shown.stderr).toBe(0);
    const json = JSON.parse(shown.stdout) as { id: string; status: string; nodes: Record<string, unknown> };
    expect(json.status).toBe(raw?.status);
    expect(json.nodes).toEqual(
      Object.fromEntries(
        Object.entries(raw?.nodes ?? {}).map(([name, n]) => [
          name,
          { jobId: n.jobId, status: n.status, dependsOn: n.dependsOn },
        ]),
      ),
    );
    const text = await runCli(cli.bin, ["flows", "show", "cli-flow"], { NATS_URL: server.url });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^flow:\s+cli-flow/);
    expect(text.stdout).toMatch(/parent\s+running\s+\S+\s+child0/);
    expect(text.stdout).toMatch(/child0\s+succeeded/);
    const missing = await runCli(cli.bin, ["flows", "show", "nope"], { NATS_URL: server.url });
    expect(missing.code).toBe(3);
    await flow.cancel("test over");
  });
});
