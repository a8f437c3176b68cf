import { describe, expect, it } from "vitest";
import { deliveryCountOf, deliverySeqOf } from "../../src/adapters/nats/ack-subjects.ts";

/**
 * The oracle: the reply subject as the server writes it, built here from its
 * fields (nats-server's `$JS.ACK` layout), so the count read back is known.
 */
const reply = (deliveries: number, extra: { domain?: string; hash?: string; token?: string } = {}) =>
  [
    "$JS",
    "ACK",
    ...(extra.domain !== undefined ? [extra.domain, extra.hash ?? "hash"] : []),
    "KV_stream-1",
    "consumer_2",
    String(deliveries),
    "123456",
    "789",
    "1796275682902000000",
    "42",
    ...(extra.token !== undefined ? [extra.token] : []),
  ].join(".");

describe("deliveryCountOf", () => {
  it("reads the delivery count of a 2.9 reply subject (9 tokens)", () => {
    for (const n of [1, 2, 5, 17, 1_000_000]) expect(deliveryCountOf(reply(n))).toBe(n);
  });

  it("reads it after a domain and account hash, with or without the newer servers' last token", () => {
    expect(deliveryCountOf(reply(3, { domain: "_", hash: "" }))).toBe(3);
    expect(deliveryCountOf(reply(4, { domain: "hub", hash: "ABCD" }))).toBe(4);
    expect(deliveryCountOf(reply(7, { domain: "hub", hash: "ABCD", token: "rand0m" }))).toBe(7);
  });

  it("does not take another field for the count", () => {
    // Every other numeric field differs from the count: a wrong token reads one of them.
    const subject = "$JS.ACK.s.c.6.11.12.13.14";
    expect(deliveryCountOf(subject)).toBe(6);
  });

  it("answers undefined for what is not a delivery's reply subject", () => {
    expect(deliveryCountOf("_INBOX.abc.def")).toBeUndefined();
    expect(deliveryCountOf("$JS.ACK.s.c.1.2.3")).toBeUndefined();
    expect(deliveryCountOf("$JS.ACK.d.s.c.1.2.3.4.5")).toBeUndefined(); // 10 tokens: neither layout
    expect(deliveryCountOf("$JS.ACK.s.c.x.2.3.4.5")).toBeUndefined();
    expect(deliveryCountOf("$JS.ACK.s.c.0.2.3.4.5")).toBeUndefined();
    expect(deliveryCountOf("$JS.ACK.a.b.s.c..2.3.4.5")).toBeUndefined();
  });
});

describe("deliverySeqOf", () => {
  it("reads the consumer's delivery sequence in either layout, no other field", () => {
    // Every numeric field differs: a wrong token reads another one.
    expect(deliverySeqOf("$JS.ACK.s.c.6.11.12.13.14")).toBe(12);
    expect(deliverySeqOf("$JS.ACK._..s.c.6.11.12.13.14")).toBe(12);
    expect(deliverySeqOf("$JS.ACK.hub.ABCD.s.c.6.11.12.13.14.rand0m")).toBe(12);
    expect(deliverySeqOf(reply(3))).toBe(789);
  });

  it("answers undefined for what is not a delivery's reply subject", () => {
    expect(deliverySeqOf("_INBOX.abc.def")).toBeUndefined();
    expect(deliverySeqOf("$JS.ACK.s.c.1.2.3")).toBeUndefined();
    expect(deliverySeqOf("$JS.ACK.s.c.1.2.x.4.5")).toBeUndefined();
    expect(deliverySeqOf("$JS.ACK.s.c.1.2..4.5")).toBeUndefined();
  });
});
