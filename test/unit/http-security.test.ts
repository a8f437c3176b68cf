import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { BearerTokens, bearerToken } from "../../src/adapters/http/bearer-tokens.ts";
import { ofJobSubmit, type ReceiptClaims, ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";

const claims: ReceiptClaims = {
  v: 3,
  s: "5ub1d0ff",
  j: "job1",
  i: 7,
  r: "$JS.ACK.jetstate_tasks_q1.job1.1.8.8.1700000000000000000.3",
  w: "alice",
  d: 1,
  x: 1_700_000_030_000,
};

describe("receipts", () => {
  const signer = new ReceiptSigner("a-secret-of-at-least-thirty-two-bytes!");

  it("verify gives back what sign put in", () => {
    expect(signer.verify(signer.sign(claims))).toEqual(claims);
  });

  it("a receipt of another key, a changed claim or a changed signature is refused", () => {
    const receipt = signer.sign(claims);
    const [body, mac] = receipt.split(".") as [string, string];
    const other = new ReceiptSigner("another-secret-of-thirty-two-bytes!!!");
    const forgedBody = Buffer.from(JSON.stringify({ ...claims, j: "job2" })).toString("base64url");
    const flip = (s: string, at: number) => s.slice(0, at) + (s[at] === "A" ? "B" : "A") + s.slice(at + 1);
    for (const bad of [
      other.sign(claims),
      `${forgedBody}.${mac}`,
      `${body}.${flip(mac, 3)}`,
      `${flip(body, 5)}.${mac}`,
      `${body}.`,
      `.${mac}`,
      body,
      `${body}.${mac}.x`,
      `${body}.${mac}\u0000`,
      `${body}.${mac}=`,
      `${body}.${mac.slice(0, 20)}*${mac.slice(20)}`,
      "",
      "x".repeat(5000),
    ]) {
      expect(signer.verify(bad), bad.slice(0, 40)).toBeUndefined();
    }
    for (const notString of [undefined, null, 42, {}, [receipt]])
      expect(signer.verify(notString)).toBeUndefined();
  });

  it("an authentic signature over claims of the wrong shape is refused", () => {
    const signWith = (key: string, value: unknown) => {
      // The same construction as ReceiptSigner, over arbitrary JSON.
      const body = Buffer.from(JSON.stringify(value)).toString("base64url");
      return `${body}.${createHmac("sha256", key).update(body).digest("base64url")}`;
    };
    const key = "a-secret-of-at-least-thirty-two-bytes!";
    expect(signer.verify(signWith(key, claims))).toEqual(claims);
    for (const wrong of [
      { ...claims, v: 1 },
      { ...claims, s: undefined },
      { ...claims, s: 7 },
      { ...claims, v: 2 },
      { ...claims, w: undefined },
      { ...claims, i: -1 },
      { ...claims, d: 0 },
      { ...claims, x: "soon" },
      [1],
      null,
    ]) {
      expect(signer.verify(signWith(key, wrong))).toBeUndefined();
    }
  });

  it("a version 2 receipt (no submit named) is still read", () => {
    const { s: _submit, ...older } = claims;
    const v2: ReceiptClaims = { ...older, v: 2 };
    expect(signer.verify(signer.sign(v2))).toEqual(v2);
  });

  it("a receipt is of the job's submit now: version 3 by the submit it names, version 2 always", () => {
    const record = { submitId: "5ub1d0ff" };
    expect(ofJobSubmit(claims, record)).toBe(true);
    // The key submitted again (the store came back empty): the same job id, another submit.
    expect(ofJobSubmit(claims, { submitId: "a9a1n000" })).toBe(false);
    // From before the upgrade: it names no submit, and is taken for the record's.
    const { s: _submit, ...older } = claims;
    expect(ofJobSubmit({ ...older, v: 2 }, { submitId: "a9a1n000" })).toBe(true);
  });

  it("without a secret each signer has its own random key", () => {
    expect(new ReceiptSigner().verify(new ReceiptSigner().sign(claims))).toBeUndefined();
  });
});

describe("bearer tokens", () => {
  const tokens = new BearerTokens({ "token-for-alice-0123": "alice", "token-for-bob-456789": "bob@site-2" });

  it("names the identity of a configured token and nothing else", () => {
    expect(tokens.identify("token-for-alice-0123")?.identity).toBe("alice");
    expect(tokens.identify("token-for-bob-456789")?.identity).toBe("bob@site-2");
    for (const wrong of [
      "",
      "token-for-alice-012",
      "token-for-alice-01234",
      "TOKEN-FOR-ALICE-0123",
      "x".repeat(10_000),
    ]) {
      expect(tokens.identify(wrong)).toBeUndefined();
    }
  });

  it("reads the Bearer scheme only", () => {
    expect(bearerToken("Bearer abc.DEF-123")).toBe("abc.DEF-123");
    expect(bearerToken("bearer abc")).toBe("abc");
    for (const bad of [
      undefined,
      null,
      "",
      "Bearer",
      "Bearer ",
      "Basic abc",
      "Bearer a b",
      "Bearerabc",
      "Bearer é",
    ]) {
      expect(bearerToken(bad)).toBeUndefined();
    }
  });

  it("refuses a configuration without tokens, with short tokens or odd identities", () => {
    for (const bad of [
      {},
      { short: "alice" },
      { "long-enough-token-123": "" },
      { "long-enough-token-123": "a b" },
      { "long-enough-token-123": { identity: "a", role: "admin", queues: "*" } },
      { "long-enough-token-123": { identity: "a", role: "worker", queues: [] } },
      { "long-enough-token-123": { identity: "a", role: "worker", queues: ["a.b"] } },
      { "long-enough-token-123": { identity: "a", role: "worker" } },
      { "long-enough-token-123": { identity: "a", role: "read", queues: "*", extra: 1 } },
      null,
      [],
    ]) {
      expect(() => new BearerTokens(bad as Record<string, string>)).toThrow(InvalidArgument);
    }
  });

  it("a bare identity is a worker on every queue; a scoped token names its role and queues", () => {
    const scoped = new BearerTokens({
      "token-bare-0123456789": "gpu-box-7",
      "token-read-0123456789": { identity: "dash", role: "read", queues: ["detect", "ocr"] },
    });
    const bare = scoped.identify("token-bare-0123456789")!;
    expect([bare.identity, bare.role, bare.allows("anything")]).toEqual(["gpu-box-7", "worker", true]);
    const reader = scoped.identify("token-read-0123456789")!;
    expect([reader.role, reader.allows("ocr"), reader.allows("other")]).toEqual(["read", true, false]);
  });
});
