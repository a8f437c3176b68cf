/**
 * A worker finds the jobs running on its queue from the consumer names of
 * the queue's tasks stream, read page by page by offset (the server's list
 * is sorted by name). A job that ends between two pages deletes its
 * consumer and shifts every later name down: read from the last page's end,
 * the name that moved onto it would be missed. The oracle is the set of
 * names that lived through the whole listing, kept apart from the pages.
 */
import { describe, expect, it } from "vitest";
import { type NamesPage, namesThroughPages } from "../../src/adapters/nats/queue-consumers.ts";

/** A server's sorted names, 1,024 a page; `between` runs after each page is answered. */
const pagedServer = (names: string[], between: (names: string[], page: number) => void) => {
  let pages = 0;
  return async (offset: number): Promise<NamesPage> => {
    const sorted = [...names].sort();
    const page = { total: sorted.length, consumers: sorted.slice(offset, offset + 1024) };
    between(names, pages++);
    return page;
  };
};

const ids = (n: number) => Array.from({ length: n }, (_, k) => `j${String(k).padStart(5, "0")}`);

describe("namesThroughPages", () => {
  it("reads every name of a list longer than a page", async () => {
    const all = ids(3000);
    expect(await namesThroughPages(pagedServer(all, () => {}))).toEqual(new Set(all));
  });

  it("misses no name that lived through the listing while names before it are deleted between pages", async () => {
    const all = ids(2500);
    const deleted = new Set<string>();
    // After each page, 50 jobs of the first page end: every later name moves down by 50.
    const read = pagedServer(all, (names, page) => {
      for (let k = 0; k < 50; k++) {
        const gone = names.splice(page * 60, 1)[0];
        if (gone !== undefined) deleted.add(gone);
      }
    });
    const found = await namesThroughPages(read);
    const lived = all.filter((name) => !deleted.has(name));
    expect(lived.filter((name) => !found.has(name))).toEqual([]);
  });

  it("an empty or missing page ends the listing", async () => {
    expect(await namesThroughPages(async () => ({ total: 0, consumers: null }))).toEqual(new Set());
  });
});
