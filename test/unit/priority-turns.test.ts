/**
 * The order of a queue pull's jobs (`kernel/priority-turns.ts`, the HTTP
 * API's `POST /queues/{queue}/tasks`): higher priorities first, round robin
 * among equals, every `oldestEvery`-th pull the plain round robin of all.
 * The oracle: orders written out here, and a count of how often each job is
 * asked first over many pulls.
 */
import { describe, expect, it } from "vitest";
import { priorityTurn } from "../../src/kernel/priority-turns.ts";
import { oldestEvery } from "../../src/kernel/slots.ts";

const jobs = { a: 0, b: 10, c: 0, d: 10, e: -4 } as Record<string, number>;
const names = Object.keys(jobs);
const order = (turn: number, list = names) => priorityTurn(list, (n) => jobs[n] ?? 0, turn).join("");

describe("priorityTurn", () => {
  it("asks higher priorities first, taking turns among equals", () => {
    expect(order(0)).toBe("bdace");
    expect(order(1)).toBe("dbcae");
    expect(order(2)).toBe("bdace");
  });

  it("is the plain round robin every oldestEvery-th pull", () => {
    expect(order(oldestEvery - 1)).toBe("abcde");
    expect(order(2 * oldestEvery - 1)).toBe("bcdea");
  });

  it("is the plain round robin when all have one priority, as before priorities", () => {
    for (let turn = 0; turn < 3 * oldestEvery; turn++) {
      const s = turn % 3;
      expect(order(turn, ["a", "c", "x"]), `turn ${turn}`).toBe(
        ["a", "c", "x"].map((_, i) => ["a", "c", "x"][(i + s) % 3]).join(""),
      );
    }
  });

  it("asks every job first within oldestEvery × jobs pulls, whatever their priorities", () => {
    for (const count of [2, 3, 5, 8]) {
      const list = names.slice(0, Math.min(count, names.length)).concat(count > 5 ? ["f", "g", "h"] : []);
      const firsts = new Map<string, number[]>();
      const pulls = 4 * oldestEvery * list.length;
      for (let turn = 0; turn < pulls; turn++) {
        const first = priorityTurn(list, (n) => jobs[n] ?? 0, turn)[0] as string;
        firsts.set(first, [...(firsts.get(first) ?? []), turn]);
      }
      for (const job of list) {
        const turns = [-1, ...(firsts.get(job) ?? []), pulls];
        const gaps = turns.slice(1).map((t, i) => t - (turns[i] as number));
        expect(Math.max(...gaps), `${job} of ${list.join("")}`).toBeLessThanOrEqual(
          oldestEvery * list.length,
        );
      }
    }
  });
});
