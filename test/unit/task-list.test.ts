/**
 * A job's running tasks (`TaskList`, linked through the tasks) against a
 * `Set`, the collection it replaced, as the oracle: the same random adds and
 * deletes, then the same size and members; and a walk that takes out the
 * task it is at still meets every other task once.
 */
import { describe, expect, it } from "vitest";
import type { TaskLease } from "../../src/adapters/broker.ts";
import { type ActiveJob, RunningTask, TaskList } from "../../src/api/running-tasks.ts";

const task = () => new RunningTask({} as TaskLease, {} as ActiveJob);

/** A small deterministic generator (mulberry32). */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

describe("a job's running tasks", () => {
  it("hold what a Set holds after the same adds and deletes", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const next = random(seed);
      const pool = Array.from({ length: 12 }, task);
      const list = new TaskList();
      const model = new Set<RunningTask>();
      for (let step = 0; step < 400; step++) {
        const t = pool[Math.floor(next() * pool.length)] as RunningTask;
        if (next() < 0.5 && !model.has(t)) {
          list.add(t);
          model.add(t);
        } else expect(list.delete(t)).toBe(model.delete(t));
        expect(list.size).toBe(model.size);
      }
      expect(new Set(list)).toEqual(model);
      expect([...list]).toHaveLength(model.size);
    }
  });

  it("meets every task once while the walk takes out the one it is at", () => {
    const list = new TaskList();
    const tasks = Array.from({ length: 5 }, task);
    for (const t of tasks) list.add(t);
    const met: RunningTask[] = [];
    for (const t of list) {
      met.push(t);
      list.delete(t);
    }
    expect(new Set(met)).toEqual(new Set(tasks));
    expect(met).toHaveLength(5);
    expect(list.size).toBe(0);
    expect([...list]).toEqual([]);
  });
});
