/**
 * Flows (issue #19 item 6) on both brokers: one runtime submits, another runs
 * the workers and drives the flow. The oracle is the workers' ledger (what
 * each handler ran, when, what it returned and what its dependencies were
 * when it asked), and for bad input a raw reading of the flows store (a
 * nats.js KV client; the memory server's bucket), never the runtime's answer.
 */
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { IdempotencyConflict, InvalidArgument } from "../../src/kernel/errors.ts";
import { defineQueue } from "../../src/kernel/queue.ts";
import { PermanentError } from "../../src/kernel/task-outcome.ts";
import { createMemoryServer, type MemoryServer } from "../../src/testing.ts";
import { liveKeys } from "../harness/kv-keys.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { memoryPool, natsPool } from "../harness/runtime-pools.ts";
import { waitUntil } from "../harness/wait.ts";

interface Entry {
  readonly queue: string;
  readonly jobId: string;
  readonly index: number;
  readonly payload: unknown;
  readonly startedAt: number;
  endedAt: number;
  result?: unknown;
  /** What `rt.flows.dependencies()` gave the handler: each dependency's job id and results. */
  deps?: Record<string, { jobId: string; status: string; results: unknown[] }>;
}

interface Backend {
  readonly name: string;
  runtime(name: string): Promise<Runtime>;
  /** Flow ids stored, read raw. */
  storedFlows(): Promise<string[]>;
  /** Flow ids marked not settled (`live.<id>`), read raw. */
  marks(): Promise<string[]>;
  stop(): Promise<void>;
}

const memoryBackend = (): Backend => {
  const server: MemoryServer = createMemoryServer();
  return {
    ...memoryPool({}, server),
    storedFlows: async () =>
      memoryServerState(server)
        .flows.live()
        .map((e) => e.key)
        .filter((key) => !key.startsWith("live."))
        .sort(),
    marks: async () =>
      memoryServerState(server)
        .flows.live()
        .map((e) => e.key)
        .filter((key) => key.startsWith("live."))
        .map((key) => key.slice(5)),
  };
};

const natsBackend = (nats: NatsServerHandle, prefix: string): Backend => {
  return {
    ...natsPool(nats.url, { prefix }),
    async storedFlows() {
      const nc = await connect({ servers: nats.url });
      try {
        const keys = (await liveKeys(nc, `${prefix}_flows`)).filter((key) => !key.startsWith("live."));
        // In id order: the stream's order moves with each write of a flow still settling.
        return keys.sort();
      } finally {
        await nc.close();
      }
    },
    async marks() {
      const nc = await connect({ servers: nats.url });
      try {
        return (await liveKeys(nc, `${prefix}_flows`, "live.>")).map((key) => key.slice(5));
      } finally {
        await nc.close();
      }
    },
  };
};

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

let prefixes = 0;
const backends: Array<{ name: string; make(): Backend }> = [
  { name: "memory", make: memoryBackend },
  { name: "nats", make: () => natsBackend(nats, `fl${++prefixes}`) },
];

/** Two runtimes (submitter, worker+driver) and a ledger of every handler call. */
const setup = async (backend: Backend) => {
  const submitter = await backend.runtime("submitter");
  const worker = await backend.runtime("worker");
  const ledger: Entry[] = [];
  const handle = async (
    queue: string,
    task: { jobId: string; index: number; payload: unknown },
    signal: AbortSignal,
  ) => {
    const entry: Entry = {
      queue,
      jobId: task.jobId,
      index: task.index,
      payload: task.payload,
      startedAt: Date.now(),
      endedAt: 0,
    };
    ledger.push(entry);
    if (queue === "sum") {
      const deps = await worker.flows.dependencies(task.jobId);
      entry.deps = Object.fromEntries(
        Object.entries(deps).map(([name, d]) => [
          name,
          { jobId: d.jobId, status: d.status, results: d.results.map((r) => (r.ok ? r.result : "error")) },
        ]),
      );
    }
    const payload = task.payload as { fail?: boolean; n?: number; hold?: boolean };
    // A held task runs until its job is cancelled (the signal aborts).
    await new Promise((resolve) => {
      if (!payload.hold) setTimeout(resolve, 5);
      else signal.addEventListener("abort", resolve, { once: true });
    });
    entry.endedAt = Date.now();
    if (payload.fail) throw new PermanentError("child refused");
    entry.result = queue === "sum" ? "sum" : `${task.jobId}:${payload.n}`;
    return entry.result;
  };
  for (const queue of ["count", "sum"])
    worker.workers.start({ queue, concurrency: 4, handler: (task, ctx) => handle(queue, task, ctx.signal) });
  return { submitter, worker, ledger };
};

for (const { name, make } of backends) {
  describe(`flows on ${name}`, () => {
    let backend: Backend;
    // One submitter and one worker runtime for the file: a worker of an earlier test would take tasks too.
    let parts: Awaited<ReturnType<typeof setup>>;
    beforeAll(async () => {
      backend = make();
      parts = await setup(backend);
    });
    afterAll(async () => {
      await backend.stop();
    });

    it("parent + 3 children: the parent runs once, after every child ended, and sees their results", async () => {
      const { submitter, ledger } = parts;
      const flow = await submitter.flows.submit({
        parent: { queue: "sum", tasks: [{}] },
        children: [0, 1, 2].map((c) => ({ queue: "count", tasks: [{ n: c * 10 }, { n: c * 10 + 1 }] })),
      });
      const end = await flow.done();
      expect(end.status).toBe("succeeded");
      const parents = ledger.filter((e) => e.queue === "sum");
      expect(parents).toHaveLength(1);
      const children = ledger.filter((e) => e.queue === "count");
      expect(children).toHaveLength(6);
      const parent = parents[0] as Entry;
      expect(parent.startedAt).toBeGreaterThanOrEqual(Math.max(...children.map((c) => c.endedAt)));
      // What the parent saw equals what the child handlers returned, child by child.
      for (const c of [0, 1, 2]) {
        const jobId = end.nodes[`child${c}`]?.jobId as string;
        const returned = children
          .filter((e) => e.jobId === jobId)
          .sort((a, b) => a.index - b.index)
          .map((e) => e.result);
        expect(returned).toHaveLength(2);
        expect(parent.deps?.[`child${c}`]).toEqual({ jobId, status: "succeeded", results: returned });
      }
      expect(parent.jobId).toBe(end.nodes.parent?.jobId);
      // Settled: its mark is gone from the store (the sweep reads marks, not every flow kept),
      // removed by the step that settled it: sooner than the first sweep (2 s), which would too.
      await waitUntil(async () => !(await backend.marks()).includes(flow.id), {
        timeoutMs: 1500,
        message: "the settled flow's mark removed",
      });
      // From another runtime: the same flow, ended.
      const seen = await (await backend.runtime("reader")).flows.get(flow.id);
      expect((await seen?.done())?.status).toBe("succeeded");
    });

    it("a DAG a → {b, c} → d runs in dependency order", async () => {
      const { submitter, ledger } = parts;
      const job = (n: number, dependsOn: string[] = []) => ({ queue: "count", tasks: [{ n }], dependsOn });
      const flow = await submitter.flows.submit({
        jobs: { d: { ...job(3, ["b", "c"]) }, b: job(1, ["a"]), c: job(2, ["a"]), a: job(0) },
      });
      const end = await flow.done();
      expect(end.status).toBe("succeeded");
      const of = (node: string) => ledger.find((e) => e.jobId === end.nodes[node]?.jobId) as Entry;
      expect(ledger.filter((e) => Object.values(end.nodes).some((n) => n.jobId === e.jobId))).toHaveLength(4);
      expect(of("b").startedAt).toBeGreaterThanOrEqual(of("a").endedAt);
      expect(of("c").startedAt).toBeGreaterThanOrEqual(of("a").endedAt);
      expect(of("d").startedAt).toBeGreaterThanOrEqual(Math.max(of("b").endedAt, of("c").endedAt));
    });

    it("a job whose times are Dates runs at them: what the flow stores is read back as times", async () => {
      const { submitter, ledger } = parts;
      const at = Date.now() + 300;
      const flow = await submitter.flows.submit({
        jobs: {
          held: { queue: "count", tasks: [{ n: 70 }], runAt: new Date(at) },
          each: { queue: "count", tasks: [{ n: 71 }, { n: 72 }], taskRunAt: [new Date(at), null] },
        },
      });
      const end = await flow.done();
      expect(end.status).toBe("succeeded");
      const held = ledger.find((e) => e.jobId === end.nodes.held?.jobId);
      expect(held?.startedAt).toBeGreaterThanOrEqual(at);
      expect(ledger.filter((e) => e.jobId === end.nodes.each?.jobId)).toHaveLength(2);
    });

    it("a job of a typed queue runs on what its schema made of each task, as a direct submit does", async () => {
      const { submitter, ledger } = parts;
      // The schema fills in a default: the handler must see it, from the flow as from a submit.
      const count = defineQueue<{ n: number; scale?: number }>("count", {
        schema: { task: (value) => ({ scale: 3, ...(value as { n: number }) }) },
      });
      const direct = await submitter.jobs.submit({ queue: count, tasks: [{ n: 80 }] });
      await direct.done();
      const flow = await submitter.flows.submit({ jobs: { typed: { queue: count, tasks: [{ n: 81 }] } } });
      const end = await flow.done();
      expect(end.status).toBe("succeeded");
      const payloadOf = (jobId: string | undefined) => ledger.find((e) => e.jobId === jobId)?.payload;
      expect(payloadOf(direct.id)).toEqual({ scale: 3, n: 80 });
      expect(payloadOf(end.nodes.typed?.jobId)).toEqual({ scale: 3, n: 81 });
    });

    it("a failing child: the parent is skipped and the flow fails with the reason; with continue the parent runs", async () => {
      const { submitter, ledger } = parts;
      const children = [
        { queue: "count", tasks: [{ n: 1 }] },
        { queue: "count", tasks: [{ fail: true }], maxDeliver: 1 },
      ];
      const failing = await submitter.flows.submit({ parent: { queue: "sum", tasks: [{}] }, children });
      const end = await failing.done();
      expect(end.status).toBe("failed");
      expect(end.reason).toMatch(/^job child1 failed/);
      expect(end.nodes.parent?.status).toBe("skipped");
      expect(end.nodes.parent?.reason).toBe("dependency child1 failed");
      expect(ledger.filter((e) => e.jobId === end.nodes.parent?.jobId)).toHaveLength(0);

      const going = await submitter.flows.submit({
        parent: { queue: "sum", tasks: [{}] },
        children,
        policy: { onChildFailure: "continue" },
      });
      const after = await going.done();
      expect(after.status).toBe("succeeded");
      const parent = ledger.filter((e) => e.jobId === after.nodes.parent?.jobId);
      expect(parent).toHaveLength(1);
      expect(parent[0]?.deps?.child1).toEqual({
        jobId: after.nodes.child1?.jobId,
        status: "failed",
        results: ["error"],
      });
    });

    it("cancel from another runtime: the running child's job is cancelled, the parent never submitted", async () => {
      const { submitter, worker, ledger } = parts;
      const flow = await submitter.flows.submit({
        parent: { queue: "sum", tasks: [{}] },
        children: [{ queue: "count", tasks: [{ hold: true }] }],
      });
      const child = flow.snapshot().nodes.child0?.jobId as string;
      while (!ledger.some((e) => e.jobId === child)) await new Promise((r) => setTimeout(r, 10));
      const other = await worker.flows.get(flow.id);
      await other?.cancel("enough");
      const end = await flow.done();
      expect(end.status).toBe("cancelled");
      expect(end.reason).toBe("enough");
      expect(end.nodes.parent?.status).toBe("cancelled");
      // The job records, read without the flow: the child's job cancelled, the parent's never made.
      expect((await submitter.jobs.record(child))?.reason).toMatch(/flow cancelled/);
      expect(await submitter.jobs.record(end.nodes.parent?.jobId as string)).toBeUndefined();
      expect(ledger.filter((e) => e.jobId === end.nodes.parent?.jobId)).toHaveLength(0);
    });

    it("a flow id submitted again: the same request is the same flow (one job per node); another is refused", async () => {
      const { submitter, worker, ledger } = parts;
      const request = { id: "again", jobs: { a: { queue: "count", tasks: [{ n: 7 }] } } };
      const first = await submitter.flows.submit(request);
      const second = await worker.flows.submit(request);
      expect(second.id).toBe(first.id);
      expect((await second.done()).status).toBe("succeeded");
      expect(ledger.filter((e) => e.jobId === first.snapshot().nodes.a?.jobId)).toHaveLength(1);
      const other = await submitter.flows
        .submit({ id: "again", jobs: { a: { queue: "count", tasks: [{ n: 8 }] } } })
        .catch((e: unknown) => e);
      expect(other).toBeInstanceOf(IdempotencyConflict);
    });

    it("bad flows are refused, naming the field, and nothing is stored", async () => {
      const { submitter } = parts;
      const before = await backend.storedFlows();
      const refused = async (request: unknown, field: string) => {
        const error = await submitter.flows.submit(request as never).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(InvalidArgument);
        expect((error as InvalidArgument).field).toBe(field);
      };
      const job = { queue: "count", tasks: [{ n: 1 }] };
      await refused({ jobs: {} }, "jobs");
      await refused({ jobs: { a: { ...job, dependsOn: ["zz"] } } }, "jobs.a.dependsOn[0]");
      await refused(
        { jobs: { a: { ...job, dependsOn: ["b"] }, b: { ...job, dependsOn: ["a"] } } },
        "jobs.a.dependsOn",
      );
      await refused(
        { jobs: Object.fromEntries(Array.from({ length: 1001 }, (_, n) => [`j${n}`, job])) },
        "jobs",
      );
      await refused({ jobs: { a: { queue: "count", tasks: [] } } }, "jobs.a.tasks");
      await refused(
        { parent: job, children: [job, { queue: "bad queue", tasks: [1] }] },
        "children[1].queue",
      );
      await refused({ jobs: { a: job }, policy: { onChildFailure: "maybe" } }, "policy.onChildFailure");
      // Each task fits; the record naming all of them does not: refused, typed.
      const big = { queue: "count", tasks: Array.from({ length: 12 }, () => "x".repeat(100_000)) };
      await refused({ jobs: { a: big } }, "jobs");
      expect(await backend.storedFlows()).toEqual(before);
    });
  });
}
