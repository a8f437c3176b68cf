import { describe, expect, it } from "vitest";
import { decodeProgress, encodeProgress } from "../../src/kernel/task-progress.ts";

describe("encodeProgress", () => {
  it("writes the index and the info as JSON", () => {
    expect(encodeProgress(3, { pct: 50 })).toBe('{"i":3,"info":{"pct":50}}');
    expect(encodeProgress(0, "half")).toBe('{"i":0,"info":"half"}');
  });

  it("sends no info as null", () => {
    expect(encodeProgress(1, undefined)).toBe('{"i":1,"info":null}');
    expect(encodeProgress(1, null)).toBe('{"i":1,"info":null}');
  });

  it("keeps falsy info as it is", () => {
    expect(encodeProgress(2, 0)).toBe('{"i":2,"info":0}');
    expect(encodeProgress(2, false)).toBe('{"i":2,"info":false}');
  });

  it("gives undefined for info JSON cannot carry", () => {
    const cyclic: { self?: unknown } = {};
    cyclic.self = cyclic;
    expect(encodeProgress(1, cyclic)).toBeUndefined();
    expect(encodeProgress(1, () => 1)).toBeUndefined();
    expect(encodeProgress(1, Symbol("s"))).toBeUndefined();
  });
});

describe("decodeProgress", () => {
  it("reads a note back with its task id", () => {
    expect(decodeProgress("job-7", '{"i":4,"info":{"pct":80}}')).toEqual({
      taskId: "job-7.4",
      index: 4,
      info: { pct: 80 },
    });
  });

  it("round-trips what encodeProgress wrote", () => {
    const body = encodeProgress(12, ["a", 1]);
    expect(body).toBeDefined();
    expect(decodeProgress("j", body as string)).toEqual({ taskId: "j.12", index: 12, info: ["a", 1] });
  });

  it("ignores bodies that are not a note", () => {
    expect(decodeProgress("j", "not json")).toBeUndefined();
    expect(decodeProgress("j", "null")).toBeUndefined();
    expect(decodeProgress("j", '{"info":1}')).toBeUndefined();
    expect(decodeProgress("j", '{"i":"3","info":1}')).toBeUndefined();
    expect(decodeProgress("j", "7")).toBeUndefined();
  });
});
