/**
 * The scheduling section (issue #19's targets, side by side in one run):
 * delayed tasks' lateness, a recurring schedule's ticks with a runtime
 * SIGKILLed, priority behind a backlog, queue rate and concurrency limits
 * across worker processes and pause, and flows against the same jobs
 * submitted by hand. Each part starts its own runtimes on the bench's server,
 * under a prefix of its own.
 */
import { measureSchedCron, type SchedCronResult } from "./sched-cron.ts";
import { type DelayedResult, measureDelayed } from "./sched-delayed.ts";
import { measureSchedFlows, type SchedFlowsResult } from "./sched-flows.ts";
import { measureSchedLimits, type SchedLimitsResult } from "./sched-limits.ts";
import { measurePriority, type PriorityResult } from "./sched-priority.ts";
import { measureSchedQueues, type SchedQueuesResult } from "./sched-queues.ts";

export interface SchedulingResult {
  readonly delayed: DelayedResult;
  readonly cron: SchedCronResult;
  readonly priority: PriorityResult;
  readonly queues: SchedQueuesResult;
  readonly limits: SchedLimitsResult;
  readonly flows: SchedFlowsResult;
}

export async function measureScheduling(url: string, log: (line: string) => void): Promise<SchedulingResult> {
  const delayed = await measureDelayed(url);
  log(`scheduling/delayed: ${JSON.stringify(delayed)}`);
  const cron = await measureSchedCron(url);
  log(`scheduling/cron: ${JSON.stringify(cron)}`);
  const priority = await measurePriority(url);
  log(`scheduling/priority: ${JSON.stringify(priority)}`);
  const queues = await measureSchedQueues(url);
  log(`scheduling/queues: ${JSON.stringify(queues)}`);
  const limits = await measureSchedLimits(url);
  log(`scheduling/limits: ${JSON.stringify(limits)}`);
  const flows = await measureSchedFlows(url);
  log(`scheduling/flows: ${JSON.stringify(flows)}`);
  return { delayed, cron, priority, queues, limits, flows };
}

/** The section's markdown, each figure beside its target. */
export const schedulingMarkdown = (s: SchedulingResult): string[] => {
  const { delayed: d, cron: c, priority: p, queues: q, limits: l, flows: f } = s;
  const b = p.behindBacklog;
  const m = p.behindManyJobs;
  return [
    "## Scheduling",
    "",
    "| what | measured | target |",
    "| --- | --- | --- |",
    `| delayed: ${d.handled} tasks due over time, handler start − due | ${d.early} early; p50 ${d.lateP50Ms} ms, p99 ${d.lateP99Ms} ms, max ${d.lateMaxMs} ms | none early, p99 ≤ 100 ms |`,
    `| delayed: jobs held by delayMs, start − due | p50 ${d.wholeLateP50Ms} ms, max ${d.wholeLateMaxMs} ms | |`,
    `| a 1-second schedule for ${c.durationMs / 1000} s, 3 runtimes in child processes, one SIGKILLed${c.victimTick ? ` (firing ${c.victimTick})` : ""} | ${c.ticksFired} of ${c.ticksExpected} ticks fired, ${c.ticksDuplicated} twice, ${c.ticksMissed} missed; victim killed: ${c.victimKilled}; tick → job committed p50 ${c.latencyP50Ms} ms, p99 ${c.latencyP99Ms} ms | every tick exactly once |`,
    `| priority 10 behind one ${b.shape.backlogTasks}-task priority-0 job, submit → first start | p50 ${b.priority10.p50Ms} ms, max ${b.priority10.maxMs} ms (priority 0: p50 ${b.priority0.p50Ms} ms) | ≤ 100 ms |`,
    `| priority 10 behind ${m.shape.backlogJobs} priority-0 jobs, submit → first start | p50 ${m.priority10.p50Ms} ms, max ${m.priority10.maxMs} ms (priority 0: p50 ${m.priority0.p50Ms} ms) | |`,
    `| ratePerSecond ${q.rate.ratePerSecond}, 3 worker processes, ${q.rate.seconds} s | mean ${q.rate.meanPerSecond}/s, min ${q.rate.minPerSecond}, max ${q.rate.maxPerSecond}; most in any 1 s window ${q.rate.maxInAnyWindow} | 100 ± 5 per second |`,
    `| maxConcurrency ${q.concurrency.maxConcurrency}, 3 worker processes, ${q.concurrency.tasks} tasks | most handlers at once ${q.concurrency.maxOverlapSeen} | never above ${q.concurrency.maxConcurrency} |`,
    `| pause: last start after pause() returned, per process | ${q.pause.lastStartAfterPauseMs.join(", ")} ms; starts after 1 s: ${q.pause.startsAfterPause1s} | none after 1 s |`,
    `| maxConcurrency ${l.mixedCap.maxConcurrency}, native and HTTP workers together, ${l.mixedCap.tasks} tasks | most at once ${l.mixedCap.maxOverlapSeen} | never above ${l.mixedCap.maxConcurrency} |`,
    `| HTTP pull of one task (${l.httpPull.pulls} pulls) | unlimited median ${l.httpPull.unlimitedMedianMs} ms (p95 ${l.httpPull.unlimitedP95Ms}); under maxConcurrency median ${l.httpPull.cappedMedianMs} ms (p95 ${l.httpPull.cappedP95Ms}) | |`,
    `| a worker bound to an agent, with a per-target cap too large to bind | ${l.perTarget.loosePerTargetTasksPerSecond} tasks/s against ${l.perTarget.unlimitedTasksPerSecond} unlimited; two workers on one target at perTarget.maxConcurrency ${l.perTarget.cap}: most at once ${l.perTarget.maxOverlapOnTarget} | never above ${l.perTarget.cap} |`,
    ...f.shapes.map(
      (x) =>
        `| flow of 1 parent + 10 children of ${x.tasksPerChild} task(s), submit → done | p50 ${x.flowP50Ms} ms; by hand ${x.handP50Ms} ms (×${x.ratio}) | |`,
    ),
    "",
  ];
};
