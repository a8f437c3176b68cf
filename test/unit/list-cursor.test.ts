/**
 * A list cursor names its listing: the store its page was read from and the
 * filter it kept (kernel/list-page.ts). Given back elsewhere, it is refused,
 * not read as a position there, nor in a store that came back behind its
 * position (another entry stored there now); a cursor of the earlier format (`v1`, the
 * position alone) is still read, unchecked.
 */
import { describe, expect, it } from "vitest";
import {
  cursorMismatch,
  decodeCursor,
  encodeCursor,
  entryTag,
  filterTag,
  storeTag,
} from "../../src/kernel/list-page.ts";

const v1 = (text: string) => Buffer.from(text).toString("base64url");

describe("list cursors", () => {
  const store = storeTag("2026-12-06T22:00:00.000000001Z");
  const alpha = { queues: ["alpha"] };

  it("come back as they went: position, store and filter", () => {
    const cursor = encodeCursor({ position: 41, store, filter: filterTag(alpha) });
    expect(decodeCursor(cursor)).toEqual({ position: 41, store, filter: filterTag(alpha) });
    expect(cursorMismatch(decodeCursor(cursor)!, alpha, { store })).toBeUndefined();
  });

  it("are refused with another filter, whatever order it names its queues and statuses in", () => {
    const both = { queues: ["a", "b"], statuses: ["running", "failed"] as const };
    const cursor = decodeCursor(encodeCursor({ position: 9, store, filter: filterTag(both) }))!;
    expect(
      cursorMismatch(cursor, { queues: ["b", "a"], statuses: ["failed", "running"] }, { store }),
    ).toBeUndefined();
    expect(cursorMismatch(cursor, { queues: ["a"], statuses: ["failed", "running"] }, { store })).toMatch(
      /another queue or status filter/,
    );
    expect(cursorMismatch(cursor, { queues: ["a", "b"] }, { store })).toMatch(
      /another queue or status filter/,
    );
    // No filter is a filter of its own: a cursor of a filtered walk is not a position in all jobs.
    expect(cursorMismatch(cursor, {}, { store })).toMatch(/another queue or status filter/);
  });

  it("are refused in a store made again since their page (its tag differs)", () => {
    const cursor = decodeCursor(encodeCursor({ position: 50, store, filter: filterTag({}) }))!;
    const again = storeTag("2026-12-06T22:05:00.000000001Z");
    expect(again).not.toBe(store);
    expect(cursorMismatch(cursor, {}, { store: again })).toMatch(/made again/);
  });

  it("are refused in a store that came back behind them: another entry at their position, or its end before it", () => {
    const at = entryTag("jabc", "1796600000000000001");
    const cursor = decodeCursor(encodeCursor({ position: 50, store, filter: filterTag({}), at }))!;
    expect(cursor.at).toBe(at);
    // The same entry there, or none any more (its key written again since): the walk goes on.
    expect(cursorMismatch(cursor, {}, { store, afterEntry: at })).toBeUndefined();
    expect(cursorMismatch(cursor, {}, { store })).toBeUndefined();
    // Another key, or the same key stored at another time, or the store ending before it.
    expect(
      cursorMismatch(cursor, {}, { store, afterEntry: entryTag("jxyz", "1796600000000000001") }),
    ).toMatch(/came back behind/);
    expect(
      cursorMismatch(cursor, {}, { store, afterEntry: entryTag("jabc", "1796600000000000002") }),
    ).toMatch(/came back behind/);
    expect(cursorMismatch(cursor, {}, { store, afterEntry: "behind" })).toMatch(/came back behind/);
  });

  it("of the earlier format are still read, as a position only", () => {
    const cursor = decodeCursor(v1("v1:120"));
    expect(cursor).toEqual({ position: 120 });
    expect(cursorMismatch(cursor!, alpha, { store })).toBeUndefined();
  });

  it("made by hand are not cursors", () => {
    for (const text of [
      "v1:-1",
      "v1:01",
      "v2:5:abc:12345678",
      "v2:5:0123456g:01234567",
      "v3:5",
      "v2:5:01234567",
    ])
      expect(decodeCursor(v1(text)), text).toBeUndefined();
    expect(decodeCursor("nope")).toBeUndefined();
    expect(decodeCursor(7)).toBeUndefined();
  });
});
