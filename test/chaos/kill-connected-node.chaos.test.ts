/**
 * (a) The node the supervising runtime is connected to is SIGKILLed: the runtime
 * must reconnect to another node (it has all three in `servers`) and the job
 * go on. The node is brought back once the job moved on (or after 20 s).
 */
import { describeChaos } from "./chaos-run.ts";

describeChaos({
  id: "a-kill-connected-node",
  title: "(a) kill the node the submitting runtime is connected to",
  inject: async (ctx) => {
    const node = await ctx.cluster.nodeServing(ctx.submitterName);
    if (node === undefined) throw new Error(`${ctx.submitterName} is connected to no node of the cluster`);
    await ctx.fault(`kill ${node.name} (serves ${ctx.submitterName})`, () => node.kill());
    const moved = await ctx.progressed(ctx.total * 0.1, 20_000);
    ctx.note("progressedWithNodeDown", String(moved));
    await node.restart();
  },
});
