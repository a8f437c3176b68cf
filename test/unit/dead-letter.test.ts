import { describe, expect, it } from "vitest";
import { boundError, maxErrorChars } from "../../src/kernel/dead-letter.ts";

describe("boundError", () => {
  it("keeps 256 characters as they are", () => {
    expect(maxErrorChars).toBe(256);
    const text = "e".repeat(256);
    expect(boundError(text)).toBe(text);
  });

  it("cuts 257 characters to 256, saying how long the text was", () => {
    const note = "… [truncated from 257 characters]";
    expect(note.length).toBe(33);
    const cut = boundError(`${"x".repeat(256)}y`);
    expect(cut).toBe(`${"x".repeat(223)}${note}`);
    expect(cut.length).toBe(256);
  });

  it("keeps the start of a long text", () => {
    const text = "ab".repeat(500);
    const cut = boundError(text);
    // The note is 34 characters here, so 222 of the text are kept.
    expect(cut).toBe(`${"ab".repeat(111)}… [truncated from 1000 characters]`);
    expect(cut.length).toBe(256);
  });
});
