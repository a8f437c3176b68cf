import { getShortestPaths } from "@xstate/graph";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AnyActorRef, createActor, type InspectionEvent, type SnapshotFrom } from "xstate";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import type { FlowNode, FlowRecord } from "../../src/kernel/flow-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { PermanentError } from "../../src/kernel/task-outcome.ts";
import { type FlowEvent, type FlowInput, flowMachine } from "../../src/machines/flow.machine.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

/**
 * The flow machine's routes, taken by real flow actors (issue #19 item 6).
 *
 * The routes come from the machine: the shortest path to every state (its
 * value and the flow's status), from a flow submitted here (no record yet)
 * and from a flow found stored in each status, with the events the runtime
 * sends (the record written or refused, the record changed). A route is the
 * sequence of states a path goes through.
 *
 * Each route is then taken by a scenario on a real runtime (memory broker and
 * a nats-server): real submits, workers, cancels and a driver whose record
 * write dies. The states the live actor went through (every snapshot the
 * runtime's inspector saw for the actor `flow:<id>`) must be the route, and
 * every route the machine has must be taken by some scenario.
 */

type Top = "checking" | "submitting" | "running" | "succeeded" | "failed" | "cancelled";

/**
 * A record as a runtime writes it: a running flow's node waits; an ended flow's node has ended
 * as it (a cancelled one: cancelled). `node` gives the node another status: a cancel is written
 * before its jobs are cancelled, and the node runs until then.
 */
const record = (status: FlowRecord["status"], node?: FlowNode["status"]): FlowRecord => ({
  v: 1,
  id: "f",
  status,
  onChildFailure: "fail",
  nodes: {
    a: {
      request: { queue: "q", tasks: [1] },
      dependsOn: [],
      jobId: "j",
      status: node ?? (status === "running" ? "waiting" : status),
    },
  },
  digest: "d",
  createdAt: 0,
  updatedAt: 0,
});
const statuses = ["running", "succeeded", "failed", "cancelled"] as const;
const events = [
  { type: "xstate.done.actor.0.flow.submitting", output: record("running") },
  { type: "xstate.error.actor.0.flow.submitting", error: new Error("write refused") },
  ...statuses.map((status) => ({ type: "flow.changed", record: record(status) })),
  // Cancelled, its job still running: the flow has not ended yet.
  { type: "flow.changed", record: record("cancelled", "running") },
] as unknown as FlowEvent[];

const serializeState = (s: SnapshotFrom<typeof flowMachine>) =>
  // A flow failed before its record was written is another state than one whose jobs failed.
  JSON.stringify({
    v: s.value,
    status: s.context.status,
    refused: !!s.context.reason?.startsWith("not submitted"),
  });

/** Every route of the machine, from a flow submitted here and from one found in each status. */
const modelRoutes = (): Set<string> => {
  const inputs: Array<{ name: string; input: FlowInput }> = [
    { name: "submitted", input: { flowId: "f" } },
    ...statuses.map((status) => ({
      name: `found ${status}`,
      input: { flowId: "f", record: record(status) },
    })),
  ];
  const routes = new Set<string>();
  for (const { name, input } of inputs) {
    const paths = getShortestPaths(flowMachine, { events, input, serializeState } as never);
    // Whole routes: those that end in a final state (a path to `running` is the start of others).
    for (const path of paths.filter((p) => p.state.status === "done")) {
      // Replayed on an actor of the machine: the states it passes, the eventless ones included.
      const actor = createActor(flowMachine, { input });
      const seen: string[] = [];
      actor.subscribe((s) => seen.push(String(s.value)));
      actor.start();
      for (const step of path.steps.slice(1)) actor.send(step.event as FlowEvent);
      actor.stop();
      routes.add(`${name}: ${dedupe(seen).join(" → ")}`);
    }
  }
  return routes;
};

const dedupe = (states: readonly string[]) => states.filter((s, n) => n === 0 || states[n - 1] !== s);

/** Runtimes on one server: a memory server, or one nats-server under one prefix. */
type Backend = (name: string, inspect: (e: InspectionEvent) => void) => Promise<Runtime>;

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

let prefixes = 0;
const backends: Record<string, () => Backend> = {
  memory: () => {
    const server = createMemoryServer();
    return (name, inspect) =>
      createTestRuntime({ name, inspect: { inspect }, broker: createMemoryBroker({ server }) });
  },
  nats: () => {
    const prefix = `model${++prefixes}`;
    return (name, inspect) =>
      createRuntime({ servers: nats.url, name, prefix, logger: silentLogger(), inspect: { inspect } });
  },
};

for (const [name, make] of Object.entries(backends)) {
  describe(`the flow machine's routes on real runtimes (${name})`, () => {
    it("every route of the machine is taken by a live flow actor, state for state", {
      timeout: 30_000,
    }, async () => {
      const expected = modelRoutes();
      // Both runtimes share one server (NATS: one prefix for both).
      const backend = make();
      const states = new Map<string, Top[]>();
      const inspect = (runtime: string) => (e: InspectionEvent) => {
        const id = (e.actorRef as AnyActorRef).id;
        if (e.type !== "@xstate.snapshot" || !id.startsWith("flow:")) return;
        const key = `${runtime} ${id}`;
        const list = states.get(key) ?? [];
        list.push(String((e.snapshot as unknown as { value: unknown }).value) as Top);
        states.set(key, list);
      };
      const a = await backend("a", inspect("a"));
      const b = await backend("b", inspect("b"));
      try {
        a.workers.start<{ fail?: boolean; hold?: boolean; ms?: number }, number>({
          queue: "q",
          handler: async (task, ctx) => {
            await new Promise((resolve) => setTimeout(resolve, task.payload.ms ?? 0));
            if (task.payload.fail) throw new PermanentError("refused");
            if (task.payload.hold)
              await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
            return 1;
          },
        });
        const job = (payload: object) => ({ queue: "q", tasks: [payload], maxDeliver: 1 });
        const observed = new Set<string>();
        const route = (runtime: string, id: string, label: string) =>
          observed.add(`${label}: ${dedupe(states.get(`${runtime} flow:${id}`) ?? []).join(" → ")}`);

        // Submitted here and succeeded; then found by b, ended.
        const ok = await a.flows.submit({ id: "ok", jobs: { a: job({}) } });
        await ok.done();
        route("a", "ok", "submitted");
        await (await b.flows.get("ok"))?.done();
        route("b", "ok", "found succeeded");
        // A child fails: the flow fails; found by b.
        const bad = await a.flows.submit({ id: "bad", parent: job({}), children: [job({ fail: true })] });
        await bad.done();
        route("a", "bad", "submitted");
        await (await b.flows.get("bad"))?.done();
        route("b", "bad", "found failed");
        // Found running by b, then succeeded; another found running, then failed.
        for (const [id, payload] of [
          ["slow-ok", { ms: 300 }],
          ["slow-bad", { ms: 300, fail: true }],
        ] as const) {
          const slow = await a.flows.submit({ id, jobs: { a: job(payload) } });
          const found = await b.flows.get(id);
          await Promise.all([slow.done(), found?.done()]);
          route("b", id, "found running");
        }
        // Held, found running by b, cancelled by a: both actors end cancelled.
        const held = await a.flows.submit({ id: "held", jobs: { a: job({ hold: true }) } });
        const seenByB = await b.flows.get("held");
        await held.cancel("enough");
        await held.done();
        await seenByB?.done();
        route("a", "held", "submitted");
        route("b", "held", "found running");
        states.delete("b flow:held");
        const again = await b.flows.get("held");
        await again?.done();
        route("b", "held", "found cancelled");
        // The record write dies: the submit rejects and its actor ends failed.
        partsOf(a).flows.driver.hook = (point) => {
          if (point === "record") throw new Error("write refused");
        };
        await expect(a.flows.submit({ id: "refused", jobs: { a: job({}) } })).rejects.toThrow(
          "write refused",
        );
        partsOf(a).flows.driver.hook = undefined;
        route("a", "refused", "submitted");
        await waitUntil(() => [...expected].every((r) => observed.has(r)), {
          timeoutMs: 5000,
          message: `routes not taken: ${[...expected].filter((r) => !observed.has(r)).join("; ")}\nobserved: ${[...observed].join("; ")}`,
        });
        // Every scenario took a route of the machine, and every route was taken.
        expect([...observed].sort()).toEqual([...expected].sort());
      } finally {
        await a.stop();
        await b.stop();
      }
    });
  });
}
