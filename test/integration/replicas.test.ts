import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

interface Line {
  readonly level: number;
  readonly msg: string;
  readonly stream?: string;
  readonly replicas?: number;
  readonly wanted?: number;
}

/** A pino logger whose lines are kept, parsed, for the test to read. */
const capturingLogger = () => {
  const lines: Line[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { lines, logger };
};

const warn = 40;
const info = 30;

/**
 * Item 1 of "Outgrowing one machine" on a single server: what jetstate
 * creates carries the `replicas` asked for (1 here: a single server refuses
 * more), and a runtime that wants another count is told, once per stream,
 * which streams differ and how to change them; it never changes them.
 */
describe("replicas", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  it("every stream and bucket is made with the replicas asked for; another count is reported once per stream, never changed", async () => {
    const first = capturingLogger();
    const rt = await createRuntime({ servers: server.url, logger: first.logger, replicas: 1 });
    await rt.admin.provision(["a", "b"]);
    const worker = rt.workers.start<number, number>({ queue: "a", handler: (t) => t.payload });
    const job = await rt.jobs.submit({ queue: "a", tasks: [1, 2, 3] });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 3 });
    await worker.stop();
    await rt.stop();

    // Read raw: every stream jetstate made, with its replica count.
    const raw = await connect({ servers: server.url, name: "raw" });
    const jsm = await jetstreamManager(raw);
    const replicasOf = async () => {
      const out: Record<string, number> = {};
      for await (const s of jsm.streams.list()) out[s.config.name] = s.config.num_replicas;
      return out;
    };
    const made = await replicasOf();
    expect(Object.keys(made).sort()).toEqual([
      "KV_jetstate_agents",
      "KV_jetstate_answers",
      "KV_jetstate_flows",
      "KV_jetstate_jobs",
      "KV_jetstate_leases",
      "KV_jetstate_presence",
      "KV_jetstate_queues",
      "KV_jetstate_schedules",
      "jetstate_advisories_a",
      "jetstate_advisories_b",
      "jetstate_dead",
      "jetstate_delayed_a",
      "jetstate_delayed_b",
      "jetstate_permits",
      "jetstate_results",
      "jetstate_tasks_a",
      "jetstate_tasks_b",
    ]);
    expect(Object.values(made).every((n) => n === 1)).toBe(true);
    // Every bucket's reads go to its leader: no direct get a lagging replica could answer.
    for (const bucket of [
      "KV_jetstate_agents",
      "KV_jetstate_answers",
      "KV_jetstate_flows",
      "KV_jetstate_jobs",
      "KV_jetstate_leases",
      "KV_jetstate_presence",
      "KV_jetstate_queues",
      "KV_jetstate_schedules",
    ])
      expect((await jsm.streams.info(bucket)).config.allow_direct, bucket).toBe(false);
    // The start line describes the server: its name and version, no cluster.
    const described = first.lines.find((l) => l.level === info && /^connected to /.test(l.msg));
    expect(described?.msg).toContain(await server.version());
    expect(described?.msg).toContain("no cluster");
    expect(first.lines.filter((l) => l.level >= warn && /replica/.test(l.msg))).toEqual([]);

    // A runtime that wants 3 finds them all at 1: told once per stream it uses, with the command.
    const second = capturingLogger();
    const rt3 = await createRuntime({ servers: server.url, logger: second.logger, replicas: 3 });
    try {
      await rt3.admin.provision(["a", "b"]);
      await rt3.admin.provision(["a", "b"]); // used again: not said again
      await rt3.jobs.list();
      await waitUntil(() => second.lines.some((l) => /only 1 server/.test(l.msg)), {
        timeoutMs: 10_000,
        message: "the warning that 3 replicas cannot fit one server",
      });
      const reports = second.lines.filter((l) => l.level === warn && l.stream !== undefined);
      const byStream = new Map<string, number>();
      for (const r of reports) byStream.set(r.stream ?? "", (byStream.get(r.stream ?? "") ?? 0) + 1);
      expect([...byStream.keys()].sort()).toEqual([
        "KV_jetstate_agents",
        "KV_jetstate_answers",
        "KV_jetstate_flows",
        "KV_jetstate_jobs",
        "KV_jetstate_leases",
        "KV_jetstate_presence",
        "KV_jetstate_queues",
        "KV_jetstate_schedules",
        "jetstate_advisories_a",
        "jetstate_advisories_b",
        "jetstate_dead",
        "jetstate_delayed_a",
        "jetstate_delayed_b",
        "jetstate_permits",
        "jetstate_results",
        "jetstate_tasks_a",
        "jetstate_tasks_b",
      ]);
      expect([...byStream.values()].every((n) => n === 1)).toBe(true);
      for (const r of reports) {
        expect(r).toMatchObject({ replicas: 1, wanted: 3 });
        expect(r.msg).toContain(`nats stream edit ${r.stream} --replicas 3`);
      }
      // Never changed.
      expect(await replicasOf()).toEqual(made);
    } finally {
      await rt3.stop();
      await raw.close();
    }
  }, 60_000);
});
