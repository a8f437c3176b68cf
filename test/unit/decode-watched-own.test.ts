/**
 * A record this broker wrote, read back by its watch, is handed out as the
 * parse of its text would give it (`decodeWatched` in
 * adapters/nats/job-records.ts copies what the text was made from instead of
 * parsing it): the same fields, no key whose value was undefined, the reason
 * as stored (bounded), frozen, and never the writer's own object.
 */
import { describe, expect, it, vi } from "vitest";
import { NatsJobRecords } from "../../src/adapters/nats/job-records.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { finishedRecord } from "../harness/finished-records.ts";

/** Records on a broker whose compare-and-set write only remembers the text it was given. */
const recordsWritingTo = (texts: string[]) =>
  new NatsJobRecords(
    {
      run: (_name: string, op: (nc: never) => Promise<unknown>) => op(undefined as never),
      handles: async () => ({}) as never,
      writeKey: async (_nc: unknown, _bucket: string, _key: string, value: string) => {
        texts.push(value);
        return texts.length;
      },
    } as never,
    "jobs",
  );

const isDeepFrozen = (value: unknown): boolean =>
  typeof value !== "object" ||
  value === null ||
  (Object.isFrozen(value) && Object.values(value).every(isDeepFrozen));

describe("a record this broker wrote, read back by its watch", () => {
  it("is what parsing its text gives, frozen, and not the writer's object", async () => {
    const texts: string[] = [];
    const records = recordsWritingTo(texts);
    const written: JobRecord = {
      ...finishedRecord(1, 1_000),
      status: "failed",
      // What JSON leaves out or bounds: an undefined field (here and nested), a long reason.
      redrive: undefined,
      settings: { ...finishedRecord(1, 1_000).settings, priority: undefined },
      reason: "x".repeat(100_000),
    };
    await records.createRecord(written);
    await records.updateRecord({ ...written, updatedAt: 2_000 }, 1);
    const expected = texts.map((text) => JSON.parse(text) as unknown);
    const parse = vi.spyOn(JSON, "parse");
    const reads = texts.map((text) => records.decodeWatched(text));
    // Not parsed: copied from what the text was made from.
    expect(parse).not.toHaveBeenCalled();
    parse.mockRestore();
    for (const [i, text] of texts.entries()) {
      const read = reads[i]!;
      expect(read).toStrictEqual(expected[i]);
      expect(Object.keys(read)).toEqual(Object.keys(JSON.parse(text)));
      expect("redrive" in read).toBe(false);
      expect("priority" in read.settings).toBe(false);
      expect(read.reason!.length).toBeLessThan(100_000);
      expect(isDeepFrozen(read)).toBe(true);
      expect(read).not.toBe(written);
      expect(read.settings).not.toBe(written.settings);
      // Read again (a second watch): the same object.
      expect(records.decodeWatched(text)).toBe(read);
    }
    // The writer's own object is left as it was: not frozen.
    expect(Object.isFrozen(written)).toBe(false);
    expect(Object.isFrozen(written.settings)).toBe(false);
  });

  it("a text it did not write is decoded and checked as before", () => {
    const records = recordsWritingTo([]);
    const text = JSON.stringify(finishedRecord(2, 3_000));
    expect(records.decodeWatched(text)).toStrictEqual(JSON.parse(text));
    expect(() => records.decodeWatched(JSON.stringify({ v: 1, id: "broken" }))).toThrow(/unreadable/);
  });
});
