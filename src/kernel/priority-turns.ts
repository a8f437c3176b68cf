import { oldestEvery } from "./slots.ts";

/**
 * The order in which one pull of a queue (the HTTP API's `POST
 * /queues/{queue}/tasks`) asks its jobs for tasks, the `turn`-th pull of
 * that queue: the same rule as a native worker's slots (`slots.ts`), for
 * callers that take turns by call instead of by waiting.
 *
 * - Higher priorities first; within one priority the jobs take turns (the
 *   first asked moves on by one each call: round robin). A pull that gets
 *   too few tasks from the first goes on to the next, lower ones included.
 * - **No starvation**: every `oldestEvery`-th pull ignores priorities and
 *   takes the plain round robin of all the queue's jobs, so each job is asked
 *   first at least once in `oldestEvery × jobs` pulls.
 * - One priority only: the plain round robin every time, as before priorities.
 */
export const priorityTurn = <T>(
  sources: readonly T[],
  priorityOf: (source: T) => number,
  turn: number,
): T[] => {
  const rotate = (list: readonly T[], by: number) => {
    const start = by % list.length;
    return [...list.slice(start), ...list.slice(0, start)];
  };
  const levels = new Map<number, T[]>();
  for (const source of sources) {
    const priority = priorityOf(source);
    const level = levels.get(priority);
    if (level) level.push(source);
    else levels.set(priority, [source]);
  }
  if (levels.size <= 1) return rotate(sources, turn);
  // Numbered separately, so every job comes first in each kind of turn, whatever the counts.
  const plainTurns = Math.floor(turn / oldestEvery);
  if (turn % oldestEvery === oldestEvery - 1) return rotate(sources, plainTurns);
  const priorityTurns = turn - plainTurns;
  return [...levels.keys()]
    .sort((a, b) => b - a)
    .flatMap((priority) => rotate(levels.get(priority) as T[], priorityTurns));
};
