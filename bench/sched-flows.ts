/**
 * Flows (issue #19 item 6): a flow of 1 parent + 10 children (1 task each,
 * then 100 tasks each), timed from `rt.flows.submit()` to `done()`, side by
 * side with the same jobs submitted by hand (the 10 children at once, their
 * `done()` awaited, then the parent). One runtime submits, drives and works
 * (concurrency 16); the two ways alternate, so drift hits both alike. The
 * overhead is the flow's record writes and its driver's steps (a step per
 * change of a node's job record), against the hand's awaits.
 */
import type { Runtime } from "../src/index.ts";
import { freshRuntime } from "./jetstate-e2e.ts";
import { median, round } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

export interface FlowShapeResult {
  readonly tasksPerChild: number;
  readonly reps: number;
  /** submit() → done() of the flow, ms. */
  readonly flowP50Ms: number;
  /** The same 11 jobs by hand: children submitted together, awaited, then the parent; ms. */
  readonly handP50Ms: number;
  /** flowP50Ms − handP50Ms. */
  readonly overheadMs: number;
  /** flowP50Ms ÷ handP50Ms. */
  readonly ratio: number;
}

export interface SchedFlowsResult {
  readonly shapes: FlowShapeResult[];
}

const children = 10;

const byHand = async (rt: Runtime, queue: string, tasks: readonly number[]): Promise<void> => {
  const kids = await Promise.all(
    Array.from({ length: children }, () => rt.jobs.submit({ queue, tasks: [...tasks] })),
  );
  await Promise.all(kids.map((k) => k.done()));
  await (await rt.jobs.submit({ queue, tasks: [0] })).done();
};

const asFlow = async (rt: Runtime, queue: string, tasks: readonly number[]): Promise<void> => {
  const flow = await rt.flows.submit({
    parent: { queue, tasks: [0] },
    children: Array.from({ length: children }, () => ({ queue, tasks: [...tasks] })),
  });
  const end = await flow.done();
  if (end.status !== "succeeded") throw new Error(`flow ended ${end.status}: ${end.reason}`);
};

export async function measureSchedFlows(
  url: string,
  { reps = 10, tasksPerChild = [1, 100] }: { reps?: number; tasksPerChild?: readonly number[] } = {},
): Promise<SchedFlowsResult> {
  const rt = await freshRuntime(url, "flows", 0);
  try {
    const queue = uniqueName("q", "flows");
    await rt.admin.provision([queue]);
    rt.workers.start<number, number>({ queue, concurrency: 16, handler: (task) => task.payload });
    const shapes: FlowShapeResult[] = [];
    for (const n of tasksPerChild) {
      const tasks = Array.from({ length: n }, (_, i) => i);
      // One of each first, untimed: streams, consumers and code paths warm.
      await asFlow(rt, queue, tasks);
      await byHand(rt, queue, tasks);
      const flow: number[] = [];
      const hand: number[] = [];
      for (let rep = 0; rep < reps; rep++) {
        for (const [way, times] of rep % 2 === 0
          ? ([
              [asFlow, flow],
              [byHand, hand],
            ] as const)
          : ([
              [byHand, hand],
              [asFlow, flow],
            ] as const)) {
          const t0 = performance.now();
          await way(rt, queue, tasks);
          times.push(performance.now() - t0);
        }
      }
      const flowP50Ms = median(flow);
      const handP50Ms = median(hand);
      shapes.push({
        tasksPerChild: n,
        reps,
        flowP50Ms: round(flowP50Ms, 1),
        handP50Ms: round(handP50Ms, 1),
        overheadMs: round(flowP50Ms - handP50Ms, 1),
        ratio: round(flowP50Ms / handP50Ms, 2),
      });
    }
    return { shapes };
  } finally {
    await rt.stop();
  }
}
