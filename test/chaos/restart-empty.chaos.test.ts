/**
 * (e) The tasks stream's leader is killed and comes back with its store wiped
 * (a lost disk): it must rejoin under the same name, get every stream back
 * from the other two, and the job go on.
 */
import { describeChaos } from "./chaos-run.ts";

describeChaos({
  id: "e-restart-empty",
  title: "(e) restart the tasks stream's leader with an empty store",
  inject: async (ctx) => {
    const leader = await ctx.cluster.streamLeader(ctx.tasksStream);
    if (leader === undefined) throw new Error(`${ctx.tasksStream} has no leader`);
    const node = ctx.cluster.node(leader);
    await ctx.fault(
      `kill ${node.name} (leads ${ctx.tasksStream}) and restart it with an empty store`,
      async () => {
        await node.kill();
        await node.restartEmpty();
      },
    );
    const back = Date.now();
    await node.waitHealthy(60_000);
    ctx.note(`${node.name}HealthyAfterRestartMs`, Date.now() - back);
  },
});
