/**
 * (b) The node leading the queue's tasks stream is SIGKILLed: the other two
 * elect a new leader, and workers must pull and ack through it. The node is
 * brought back once the job moved on (or after 20 s).
 */
import { describeChaos, newLeaderAfter } from "./chaos-run.ts";

describeChaos({
  id: "b-kill-stream-leader",
  title: "(b) kill the leader of the queue's tasks stream",
  inject: async (ctx) => {
    const leader = await ctx.cluster.streamLeader(ctx.tasksStream);
    if (leader === undefined) throw new Error(`${ctx.tasksStream} has no leader`);
    const node = ctx.cluster.node(leader);
    await ctx.fault(`kill ${node.name} (leads ${ctx.tasksStream})`, () => node.kill());
    ctx.note(
      "newLeaderAfterMs",
      (await newLeaderAfter(ctx.cluster, ctx.tasksStream, leader)) ?? "none in 30 s",
    );
    const moved = await ctx.progressed(ctx.total * 0.1, 20_000);
    ctx.note("progressedWithNodeDown", String(moved));
    await node.restart();
  },
});
