/**
 * (c) Two nodes killed one after the other, each brought back (and healthy:
 * its streams caught up) before the next is killed, so the cluster never
 * loses its quorum: first the tasks stream's leader, then whoever leads it
 * next (another node, if the first took the lead back).
 */
import type { ClusterNode } from "../harness/nats-cluster.ts";
import { type ChaosContext, describeChaos } from "./chaos-run.ts";

/** Kills `node`, lets the job move on, restarts it and waits until it is healthy. */
const killAndBringBack = async (ctx: ChaosContext, node: ClusterNode, n: number) => {
  await ctx.fault(`kill ${node.name} (#${n})`, () => node.kill());
  ctx.note(`progressedWithout${node.name}`, String(await ctx.progressed(ctx.total * 0.08, 20_000)));
  await node.restart();
  const back = Date.now();
  await node.waitHealthy(60_000);
  ctx.note(`${node.name}HealthyAfterRestartMs`, Date.now() - back);
};

describeChaos({
  id: "c-kill-two-nodes",
  title: "(c) kill two nodes one after the other, each back before the next",
  settings: { tasks: 4000, taskMs: 30 },
  inject: async (ctx) => {
    const firstLeader = await ctx.cluster.streamLeader(ctx.tasksStream);
    if (firstLeader === undefined) throw new Error(`${ctx.tasksStream} has no leader`);
    const first = ctx.cluster.node(firstLeader);
    await killAndBringBack(ctx, first, 1);
    const nextLeader = await ctx.cluster.streamLeader(ctx.tasksStream);
    const second =
      nextLeader !== undefined && nextLeader !== first.name
        ? ctx.cluster.node(nextLeader)
        : ctx.cluster.nodes.find((n) => n !== first);
    if (second === undefined) throw new Error("no second node to kill");
    await killAndBringBack(ctx, second, 2);
  },
});
