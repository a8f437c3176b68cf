import { describe, expect, it } from "vitest";
import { decodeDeadLetter, encodeDeadLetter, maxErrorChars } from "../../src/kernel/dead-letter.ts";
import { MalformedMessage } from "../../src/kernel/errors.ts";
import {
  answersOfSubmit,
  batchesUnder,
  decodeResults,
  encodeBatch,
  encodeDeadResult,
  encodeDone,
  encodeDoneJson,
  encodeFailed,
  encodeRedrive,
  fitsAlone,
  withAnswerSubmit,
  withLetter,
} from "../../src/kernel/result-wire.ts";
import { decodeProgress, decodeTask, encodeProgress, encodeTask, withSubmit } from "../../src/kernel/wire.ts";

/** Payloads that must come back as they went: quotes, unicode, nested JSON as text and as values. */
const awkward: unknown[] = [
  "say \"hi\" \\ and 'bye'",
  "ünïcødé ✓ 日本語 😀 \u0000 \u2028",
  '{"i":7,"p":"not me"}',
  { nested: { deeper: [1, { i: 3, ok: false }], json: '["a",{"b":null}]' } },
  [null, true, 0, -1.5e-7, ""],
  null,
];

const malformed = (fn: () => unknown, format: MalformedMessage["format"]) => {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(MalformedMessage);
  expect((thrown as MalformedMessage).format).toBe(format);
  return thrown as MalformedMessage;
};

describe("task messages", () => {
  it("are written as {i, p}", () => {
    expect(encodeTask(3, { url: "x" })).toBe('{"i":3,"p":{"url":"x"}}');
    expect(encodeTask(0, null)).toBe('{"i":0,"p":null}');
  });

  it.each(awkward.map((p) => [p]))("round-trip %j", (payload) => {
    expect(decodeTask(encodeTask(41, payload))).toEqual({ index: 41, payload });
  });

  it("of a lane job of several tasks name their submit, read back beside the index and payload", () => {
    expect(withSubmit(encodeTask(12, { url: "x" }), 12, "a1b2c3d4")).toBe(
      '{"i":12,"s":"a1b2c3d4","p":{"url":"x"}}',
    );
    for (const payload of awkward)
      expect(decodeTask(withSubmit(encodeTask(7, payload), 7, "a1b2c3d4"))).toEqual({
        index: 7,
        payload,
        submit: "a1b2c3d4",
      });
    // Another task's message is not stamped as this one's.
    expect(() => withSubmit(encodeTask(1, null), 11, "a1b2c3d4")).toThrow(/not the message of task 11/);
  });

  it("refuse a payload JSON cannot carry, saying why", () => {
    const cyclic: { self?: unknown } = {};
    cyclic.self = cyclic;
    expect(malformed(() => encodeTask(1, cyclic), "task").message).toMatch(
      /^cannot be serialised to JSON \(.*circular.*\)$/is,
    );
    expect(malformed(() => encodeTask(1, 10n), "task").message).toMatch(/BigInt/);
    expect(malformed(() => encodeTask(1, undefined), "task").message).toBe(
      "cannot be serialised to JSON (undefined or a function)",
    );
  });

  it.each([
    ["not json", "{i:1"],
    ["not an object", "[1,2]"],
    ["null", "null"],
    ["no index", '{"p":1}'],
    ["a string index", '{"i":"1","p":1}'],
    ["a negative index", '{"i":-1,"p":1}'],
    ["a fractional index", '{"i":1.5,"p":1}'],
    ["no payload", '{"i":1}'],
  ])("refuse %s", (_, body) => {
    malformed(() => decodeTask(body), "task");
  });
});

describe("results messages", () => {
  it("are arrays of entries joined as written", () => {
    const body = encodeBatch([
      encodeDone(0, { n: 1 }),
      encodeDoneJson(1, '"two"'),
      encodeFailed(2, "bad input", false),
      encodeFailed(3, "busy (after 3 deliveries)", true),
      encodeRedrive(4),
    ]);
    expect(body).toBe(
      '[{"i":0,"ok":true,"r":{"n":1}},{"i":1,"ok":true,"r":"two"},{"i":2,"ok":false,"e":"bad input"},' +
        '{"i":3,"ok":false,"e":"busy (after 3 deliveries)","dead":true},{"i":4,"redrive":true}]',
    );
    expect(decodeResults(body)).toEqual([
      { i: 0, ok: true, r: { n: 1 } },
      { i: 1, ok: true, r: "two" },
      { i: 2, ok: false, e: "bad input" },
      { i: 3, ok: false, e: "busy (after 3 deliveries)", dead: true },
      { i: 4, redrive: true },
    ]);
    expect(decodeResults(encodeBatch([]))).toEqual([]);
  });

  it("a dead answer names its letter, a marker the letters it sends back; entries naming none still read", () => {
    const body = encodeBatch([
      encodeFailed(0, "busy", true, 7),
      withLetter(encodeFailed(1, "busy", true), 8),
      encodeRedrive(0, "r-2", [3, 7]),
      encodeFailed(3, "bad input", false, 10),
    ]);
    expect(body).toBe(
      '[{"i":0,"ok":false,"e":"busy","dead":true,"l":7},{"i":1,"ok":false,"e":"busy","dead":true,"l":8},' +
        '{"i":0,"redrive":true,"id":"r-2","l":[3,7]},{"i":3,"ok":false,"e":"bad input"}]',
    );
    expect(decodeResults(encodeDeadResult(2, "no answer", 9))).toEqual([
      { i: 2, ok: false, e: "no answer", dead: true, l: 9 },
    ]);
    expect(
      decodeResults(
        '[{"i":0,"ok":false,"e":"busy","dead":true,"l":7},{"i":0,"redrive":true,"id":"r-2","l":[3,7]}]',
      ),
    ).toEqual([
      { i: 0, ok: false, e: "busy", dead: true, l: 7 },
      { i: 0, redrive: true, id: "r-2", l: [3, 7] },
    ]);
    // Written by earlier versions: no letter named.
    expect(
      decodeResults(
        '[{"i":0,"ok":false,"e":"busy","dead":true},{"i":0,"redrive":true,"id":"r-2"},{"i":0,"redrive":true}]',
      ),
    ).toEqual([
      { i: 0, ok: false, e: "busy", dead: true },
      { i: 0, redrive: true, id: "r-2" },
      { i: 0, redrive: true },
    ]);
  });

  it("round-trip awkward results and error texts", () => {
    const body = encodeBatch(
      awkward.flatMap((value, i) => [
        encodeDone(2 * i, value),
        encodeFailed(2 * i + 1, String(value), false),
      ]),
    );
    const read = decodeResults(body);
    awkward.forEach((value, i) => {
      expect(read[2 * i]).toEqual({ i: 2 * i, ok: true, r: value });
      expect(read[2 * i + 1]).toEqual({ i: 2 * i + 1, ok: false, e: String(value) });
    });
  });

  it("store undefined as null; a value JSON cannot carry is malformed, another toJSON error is thrown as it is", () => {
    expect(encodeDone(0, undefined)).toBe('{"i":0,"ok":true,"r":null}');
    malformed(() => encodeDone(0, () => 1), "result");
    malformed(() => encodeDone(0, Symbol("s")), "result");
    malformed(() => encodeDone(0, 1n), "result");
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    malformed(() => encodeDone(0, cycle), "result");
    expect(() => encodeDone(3, { n: 1n })).toThrow(
      /^result of task 3 cannot be serialised to JSON \(.*BigInt/,
    );
    const offline = new Error("offline");
    expect(() =>
      encodeDone(0, {
        toJSON() {
          throw offline;
        },
      }),
    ).toThrow(offline);
  });

  it("a 1-task lane job's redrive marker names the submit read: another submit of the key reads none of it", () => {
    const marker = withAnswerSubmit(encodeRedrive(0, "r-2", [7]), "old");
    const death = encodeFailed(0, "busy", true);
    const read = decodeResults(encodeBatch([withAnswerSubmit(death, "new"), marker, death]));
    expect(read[1]).toEqual({ i: 0, redrive: true, id: "r-2", l: [7], s: "old" });
    expect(answersOfSubmit(read, "new").map((e) => [e.redrive === true, e.s])).toEqual([
      [false, "new"],
      [false, undefined],
    ]);
    expect(answersOfSubmit(read, "old")).toEqual([read[1], read[2]]);
  });

  it("a dead result bounds its error like a dead letter", () => {
    const [entry] = decodeResults(encodeDeadResult(5, "x".repeat(1000)));
    expect(entry).toMatchObject({ i: 5, ok: false, dead: true });
    expect(entry?.ok === false && entry.e?.length).toBe(maxErrorChars);
  });

  it.each([
    ["not json", "[{"],
    ["not an array", '{"i":0,"ok":true}'],
    ["an entry that is not an object", '[{"i":0,"ok":true},7]'],
    ["an entry without index", '[{"ok":true}]'],
    ["an entry with neither ok nor redrive", '[{"i":0}]'],
    ["an ok that is not a boolean", '[{"i":0,"ok":"yes"}]'],
    ["an error that is not a string", '[{"i":0,"ok":false,"e":{}}]'],
    ["a redrive marker with an answer", '[{"i":0,"redrive":true,"ok":true}]'],
    ["a dead answer's letter that is not a sequence", '[{"i":0,"ok":false,"dead":true,"l":"7"}]'],
    ["a marker's letters that are not sequences", '[{"i":0,"redrive":true,"l":[7,-1]}]'],
    ["a marker's letters that are not a list", '[{"i":0,"redrive":true,"l":7}]'],
    ["a marker's submit that is not a string", '[{"i":0,"redrive":true,"s":7}]'],
  ])("refuse %s whole", (_, body) => {
    malformed(() => decodeResults(body), "result");
  });

  it("fitsAlone counts UTF-8 bytes and the brackets", () => {
    const ascii = encodeDoneJson(0, `"${"a".repeat(100)}"`);
    expect(fitsAlone(ascii, ascii.length + 2)).toBe(true);
    expect(fitsAlone(ascii, ascii.length + 1)).toBe(false);
    const wide = encodeDone(0, "€".repeat(100)); // three bytes each
    expect(fitsAlone(wide, Buffer.byteLength(wide) + 2)).toBe(true);
    expect(fitsAlone(wide, wide.length + 2)).toBe(false);
  });

  it("batchesUnder cuts entries in order into messages of at most that many bytes, each as full as it can be", () => {
    const entries = ["a", "bb", "ccc", "dddd", "€"].map((t) => `"${t}"`);
    for (const max of [8, 9, 10, 11, 12, 13, 14, 40]) {
      const batches = batchesUnder(entries, max);
      // The oracle: the bytes of each message as encoded, and the entries read back in order.
      expect(batches.flat()).toEqual(entries);
      for (const [k, batch] of batches.entries()) {
        expect(Buffer.byteLength(encodeBatch(batch))).toBeLessThanOrEqual(max);
        const next = batches[k + 1]?.[0];
        if (next) expect(Buffer.byteLength(encodeBatch([...batch, next]))).toBeGreaterThan(max);
      }
    }
    // An entry larger than the bound alone still goes, in a message of its own.
    expect(batchesUnder(['"xxxxxxxx"', '"y"'], 6)).toEqual([['"xxxxxxxx"'], ['"y"']]);
    expect(batchesUnder([], 6)).toEqual([]);
  });
});

describe("progress notes", () => {
  it("write the index and the info as JSON", () => {
    expect(encodeProgress(3, { pct: 50 })).toBe('{"i":3,"info":{"pct":50}}');
    expect(encodeProgress(0, "half")).toBe('{"i":0,"info":"half"}');
  });

  it("send no info as null", () => {
    expect(encodeProgress(1, undefined)).toBe('{"i":1,"info":null}');
    expect(encodeProgress(1, null)).toBe('{"i":1,"info":null}');
  });

  it("keep falsy info as it is", () => {
    expect(encodeProgress(2, 0)).toBe('{"i":2,"info":0}');
    expect(encodeProgress(2, false)).toBe('{"i":2,"info":false}');
  });

  it("give undefined for info JSON cannot carry (the note is dropped)", () => {
    const cyclic: { self?: unknown } = {};
    cyclic.self = cyclic;
    expect(encodeProgress(1, cyclic)).toBeUndefined();
    expect(encodeProgress(1, () => 1)).toBeUndefined();
    expect(encodeProgress(1, Symbol("s"))).toBeUndefined();
  });

  it("read a note back with its task id", () => {
    expect(decodeProgress("job-7", '{"i":4,"info":{"pct":80}}')).toEqual({
      taskId: "job-7.4",
      index: 4,
      info: { pct: 80 },
    });
  });

  it.each(awkward.map((p) => [p]))("round-trip %j", (info) => {
    const body = encodeProgress(12, info);
    expect(body).toBeDefined();
    expect(decodeProgress("j", body as string)).toEqual({ taskId: "j.12", index: 12, info });
  });

  it.each(["not json", "null", '{"info":1}', '{"i":"3","info":1}', "7"])("refuse %s", (body) => {
    malformed(() => decodeProgress("j", body), "progress");
  });
});

describe("dead letters", () => {
  it("round-trip, with the task id derived", () => {
    const letter = {
      queue: "q",
      jobId: "j",
      index: 2,
      payload: awkward,
      error: 'said "no"',
      deliveries: 3,
      at: 1,
      source: "worker" as const,
    };
    expect(decodeDeadLetter(encodeDeadLetter(letter))).toEqual({ ...letter, taskId: "j.2" });
  });

  it.each(["nope", "[]", '{"queue":"q"}'])("refuse %s", (body) => {
    malformed(() => decodeDeadLetter(body), "dead letter");
  });
});
