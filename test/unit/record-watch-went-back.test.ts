/**
 * When a record watch takes its jobs bucket for one that came back behind
 * what it read (`wentBack`): the oracle is the stream as a fake JetStream
 * manager holds it, written here, and the message the watch read last.
 */
import type { JetStreamManager, StreamInfo } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { wentBack } from "../../src/adapters/nats/record-changes.ts";

const at = (ms: number) => new Date(Date.UTC(2026, 11, 6, 9, 0, 0) + ms);
const read = { subject: "$KV.jetstate_jobs.j1", time: at(124) };

/** A stream whose last sequence is `last`, holding `stored` at every sequence (null: none there). */
const stream = (last: number, stored: { subject: string; time: Date } | null) => ({
  jsm: {
    streams: {
      getMessage: async () => {
        if (stored === null) throw new Error("no message found");
        return stored;
      },
    },
  } as unknown as JetStreamManager,
  info: { state: { last_seq: last } } as StreamInfo,
});

const check = (last: number, stored: { subject: string; time: Date } | null, seq = 7) => {
  const { jsm, info } = stream(last, stored);
  return wentBack(jsm, "KV_jetstate_jobs", info, seq, read);
};

describe("wentBack", () => {
  it("the same message read again, its stored time 1 ms apart as nats.js rounds it, is no sign", async () => {
    expect(await check(9, { subject: read.subject, time: at(124) })).toBe(false);
    expect(await check(9, { subject: read.subject, time: at(123) })).toBe(false);
    expect(await check(7, { subject: read.subject, time: at(125) })).toBe(false);
  });

  it("a message gone from there (its record written again) or none read yet is no sign", async () => {
    expect(await check(9, null)).toBe(false);
    expect(await check(9, { subject: "$KV.jetstate_jobs.j2", time: at(0) }, 0)).toBe(false);
  });

  it("less stored than was read, another key there, or the same key stored later, is", async () => {
    expect(await check(6, { subject: read.subject, time: at(124) })).toBe(true);
    expect(await check(9, { subject: "$KV.jetstate_jobs.j2", time: at(124) })).toBe(true);
    expect(await check(9, { subject: read.subject, time: at(2_000) })).toBe(true);
  });
});
