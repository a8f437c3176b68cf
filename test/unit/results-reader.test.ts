/**
 * JobResultsReader: one job's reader on NATS, joining what its queue's feed
 * delivers (from the registration on) with what was stored before (a
 * catch-up up to the job's last stored sequence). Driven here by hand: a
 * stream of the test's own and a source reading it, with the feed's
 * deliveries placed exactly where the races put them. The oracle is the
 * stream itself: every sequence of the job handed once, in stream order.
 */
import { describe, expect, it } from "vitest";
import {
  JobResultsReader,
  ReaderReset,
  type StoredResults,
  type StoredResultsSource,
} from "../../src/adapters/nats/results-reader.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The job's messages as a stream holds them; `during` runs after each message a read hands over. */
const stream = (bodies: Record<number, string>) => {
  const stored = new Map<number, string>(Object.entries(bodies).map(([seq, body]) => [Number(seq), body]));
  const message = (seq: number): StoredResults => ({ seq, data: encoder.encode(stored.get(seq)) });
  const hooks = { during: (_seq: number) => {}, failAfter: Number.POSITIVE_INFINITY, reads: 0 };
  const source: StoredResultsSource = {
    lastStored: async () => Math.max(0, ...stored.keys()),
    read: async (fromSeq, toSeq, onMessage, signal) => {
      hooks.reads++;
      for (const seq of [...stored.keys()].sort((a, b) => a - b)) {
        if (seq < fromSeq || signal.aborted) continue;
        await Promise.resolve();
        if (seq > hooks.failAfter) throw new Error("connection lost");
        onMessage(message(seq), [...stored.keys()].filter((s) => s > seq).length);
        hooks.during(seq);
        if (seq >= toSeq) return;
      }
    },
  };
  return { stored, message, source, hooks };
};

const reader = () => {
  const handed: Array<{ body: string; pending: number }> = [];
  const caughtUp = { n: 0 };
  const r = new JobResultsReader(
    (data, pending) => handed.push({ body: decoder.decode(data), pending }),
    () => caughtUp.n++,
    silentLogger(),
  );
  return { r, handed, caughtUp, bodies: () => handed.map((h) => h.body) };
};

describe("JobResultsReader", () => {
  it("hands the stored messages with pending counting down to 0, then live ones; onCaughtUp only when nothing was stored", async () => {
    const s = stream({ 1: "a", 2: "b", 3: "c" });
    const x = reader();
    expect(await x.r.catchUp(s.source, new AbortController().signal)).toBe(true);
    expect(x.handed).toEqual([
      { body: "a", pending: 2 },
      { body: "b", pending: 1 },
      { body: "c", pending: 0 },
    ]);
    expect(x.caughtUp.n).toBe(0);
    s.stored.set(4, "d");
    x.r.deliver(s.message(4));
    expect(x.handed.at(-1)).toEqual({ body: "d", pending: 0 });

    const empty = reader();
    expect(await empty.r.catchUp(stream({}).source, new AbortController().signal)).toBe(true);
    expect(empty.handed).toEqual([]);
    expect(empty.caughtUp.n).toBe(1);
  });

  it("a fresh job's reader (no source: nothing stored before the feed) hands what the feed buffered, then live ones", async () => {
    const s = stream({ 7: "a", 9: "b", 12: "c" });
    const x = reader();
    // The feed delivered two of the job's messages before the reader caught up.
    x.r.deliver(s.message(7));
    x.r.deliver(s.message(9));
    expect(x.handed).toEqual([]);
    expect(await x.r.catchUp(undefined, new AbortController().signal)).toBe(true);
    expect(x.handed).toEqual([
      { body: "a", pending: 1 },
      { body: "b", pending: 0 },
    ]);
    expect(x.caughtUp.n).toBe(0);
    x.r.deliver(s.message(12));
    expect(x.bodies()).toEqual(["a", "b", "c"]);

    const none = reader();
    expect(await none.r.catchUp(undefined, new AbortController().signal)).toBe(true);
    expect(none.caughtUp.n).toBe(1);
    const aborted = reader();
    aborted.r.deliver(s.message(7));
    expect(await aborted.r.catchUp(undefined, AbortSignal.abort())).toBe(false);
    expect(aborted.handed).toEqual([]);
  });

  it("where the catch-up and the feed overlap, each sequence is handed once: a redrive marker is not followed by the dead answer again", async () => {
    // The feed had read up to 1 when the reader registered: it delivers 2 and 3, which the
    // catch-up (up to 3, the last stored when asked) also reads; 4 is stored during the catch-up.
    const s = stream({
      1: '[{"i":2,"ok":false,"dead":true}]',
      2: '[{"i":0,"ok":true}]',
      3: '[{"i":2,"redrive":true}]',
    });
    const x = reader();
    x.r.deliver(s.message(2));
    x.r.deliver(s.message(3));
    s.hooks.during = (seq) => {
      if (seq !== 1) return;
      s.stored.set(4, '[{"i":2,"ok":true}]');
      x.r.deliver(s.message(4));
    };
    await x.r.catchUp(s.source, new AbortController().signal);
    expect(x.bodies()).toEqual([...s.stored.values()]);
    // 3 is the last of the catch-up; one more (4) was buffered behind it.
    expect(x.handed.map((h) => h.pending)).toEqual([2, 2, 1, 0]);
    expect(x.caughtUp.n).toBe(0);
    // The feed lagging behind the catch-up: what it delivers late is not handed again.
    x.r.deliver(s.message(3));
    x.r.deliver(s.message(4));
    expect(x.bodies()).toHaveLength(4);
  });

  it("what the feed delivers while the last stored sequence is asked for is handed once caught up", async () => {
    const s = stream({});
    const x = reader();
    const source: StoredResultsSource = {
      ...s.source,
      lastStored: async () => {
        // Stored after the question was answered: only the feed has it.
        s.stored.set(7, "late");
        x.r.deliver(s.message(7));
        return 0;
      },
    };
    await x.r.catchUp(source, new AbortController().signal);
    expect(x.handed).toEqual([{ body: "late", pending: 0 }]);
    expect(x.caughtUp.n).toBe(0);
  });

  it("a catch-up that failed midway goes on after the last message it handed", async () => {
    const s = stream({ 1: "a", 2: "b", 3: "c", 4: "d" });
    const x = reader();
    s.hooks.failAfter = 2;
    await expect(x.r.catchUp(s.source, new AbortController().signal)).rejects.toThrow("connection lost");
    expect(x.bodies()).toEqual(["a", "b"]);
    x.r.deliver(s.message(4)); // the feed went on meanwhile
    s.hooks.failAfter = Number.POSITIVE_INFINITY;
    await x.r.catchUp(s.source, new AbortController().signal);
    expect(x.bodies()).toEqual(["a", "b", "c", "d"]);
    expect(x.handed.at(-1)?.pending).toBe(0);
  });

  it("a stream replaced (store reset) during the catch-up: the round stops, and the new stream is read from its start", async () => {
    const s = stream({ 10: "old-a", 11: "old-b", 12: "old-c" });
    const x = reader();
    s.hooks.during = (seq) => {
      if (seq !== 10) return;
      // The server came back empty; the feed noticed and reads the new stream from seq 1.
      s.stored.clear();
      s.stored.set(1, "new-a");
      x.r.reset();
    };
    await expect(x.r.catchUp(s.source, new AbortController().signal)).rejects.toBeInstanceOf(ReaderReset);
    s.hooks.during = () => {};
    x.r.deliver(s.message(1)); // the feed, reading the new stream from its start
    s.stored.set(2, "new-b");
    await x.r.catchUp(s.source, new AbortController().signal);
    x.r.deliver(s.message(2));
    expect(x.bodies()).toEqual(["old-a", "new-a", "new-b"]);
  });

  it("a live reader told of a replaced stream hands its new messages from seq 1 on", async () => {
    const s = stream({ 50: "old" });
    const x = reader();
    await x.r.catchUp(s.source, new AbortController().signal);
    x.r.reset();
    x.r.deliver({ seq: 1, data: encoder.encode("new") });
    expect(x.bodies()).toEqual(["old", "new"]);
  });

  it("aborted before it is caught up: nothing is handed and it does not go live", async () => {
    const s = stream({ 1: "a" });
    const x = reader();
    const stop = new AbortController();
    stop.abort();
    expect(await x.r.catchUp(s.source, stop.signal)).toBe(false);
    x.r.deliver(s.message(1));
    expect(x.handed).toEqual([]);
  });
});
