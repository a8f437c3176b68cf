/**
 * (d) The tasks stream's leader is frozen with SIGSTOP for 10 s, then resumed:
 * its sockets stay open but nothing answers, so clients connected to it see
 * no disconnect (only timeouts) and the other two must elect a new leader.
 */
import { delay } from "../harness/wait.ts";
import { describeChaos } from "./chaos-run.ts";

const PAUSE_MS = 10_000;

describeChaos({
  id: "d-pause-node",
  title: "(d) SIGSTOP the tasks stream's leader for 10 s",
  settings: { tasks: 4000, taskMs: 30 },
  inject: async (ctx) => {
    const leader = await ctx.cluster.streamLeader(ctx.tasksStream);
    if (leader === undefined) throw new Error(`${ctx.tasksStream} has no leader`);
    const node = ctx.cluster.node(leader);
    const servesSubmitter = (await ctx.cluster.nodeServing(ctx.submitterName)) === node;
    await ctx.fault(
      `SIGSTOP ${node.name} (leads ${ctx.tasksStream}${servesSubmitter ? `, serves ${ctx.submitterName}` : ""}) for ${PAUSE_MS} ms`,
      () => node.pause(),
    );
    await delay(PAUSE_MS);
    node.resume();
    const back = Date.now();
    await node.waitHealthy(60_000);
    ctx.note(`${node.name}HealthyAfterResumeMs`, Date.now() - back);
  },
});
