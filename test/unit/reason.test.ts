/**
 * Reasons as records store them (`kernel/reason.ts`): cut to 256 bytes as
 * stored, whatever the text (multi-byte, escaped), saying so; the part after
 * a caller's text (who cancelled from the dashboard) kept; and an end
 * decided here with a long reason is the same end when read back cut.
 */
import { describe, expect, it } from "vitest";
import { otherEnd } from "../../src/api/job-end-wait.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { decodeRecord, encodeRecord } from "../../src/kernel/job-record-codec.ts";
import { boundReason, reasonWithSuffix } from "../../src/kernel/reason.ts";
import { finishedRecord } from "../harness/finished-records.ts";
import { longTexts } from "../harness/long-texts.ts";

/** Bytes as a record stores the text: UTF-8 of its JSON string, without the quotes. */
const stored = (text: string) => Buffer.byteLength(JSON.stringify(text)) - 2;

describe("reasons as stored", () => {
  it("are cut to 256 bytes as stored, say how long they were, and stay as they are once cut", () => {
    expect(boundReason("short")).toBe("short");
    for (const text of longTexts) {
      const cut = boundReason(text);
      expect(stored(cut)).toBeLessThanOrEqual(256);
      expect(cut).toMatch(new RegExp(`… \\[cut from ${text.length} characters\\]$`));
      expect(boundReason(cut)).toBe(cut);
    }
  });

  it("keep what follows the caller's text (who cancelled), the whole within 256 bytes with its prefix", () => {
    for (const text of longTexts) {
      const reason = `cancelled: ${reasonWithSuffix("cancelled: ", text, " (by ops)")}`;
      expect(stored(reason)).toBeLessThanOrEqual(256);
      expect(reason).toMatch(/ \(by ops\)$/);
      expect(boundReason(reason)).toBe(reason);
    }
  });

  it("an end decided here with a long reason, read back cut, is this end, not another runtime's", () => {
    const reason = `cancelled: ${"r".repeat(20_000)}`;
    const record: JobRecord = { ...finishedRecord(1, 2), status: "failed", reason };
    const readBack = decodeRecord(encodeRecord(record));
    expect(readBack.reason).not.toBe(reason);
    const decided = { jobId: "j1", queue: "q", status: "failed", reason, counts: record.counts } as const;
    expect(otherEnd(readBack, decided)).toBe(false);
    expect(otherEnd(readBack, { ...decided, reason: "cancelled: another" })).toBe(true);
    // A record written before reasons were cut holds the whole: the same end all the same.
    expect(otherEnd(record, decided)).toBe(false);
  });
});
