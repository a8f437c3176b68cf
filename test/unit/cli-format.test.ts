/**
 * The CLI's text for people (src/cli/format.ts): columns that line up for
 * `awk`, durations, the progress bar. Expected strings written by hand.
 */
import { describe, expect, it, vi } from "vitest";
import { bar, clip, duration, print, table } from "../../src/cli/format.ts";

describe("cli format", () => {
  it("aligns columns two spaces apart, the last one unpadded, cells wider than headers", () => {
    expect(
      table(
        ["ID", "STATUS", "REASON"],
        [
          ["j1", "running", ""],
          ["jlonger", "failed", "2 of 6 tasks failed"],
        ],
      ),
    ).toBe(
      ["ID       STATUS   REASON", "j1       running", "jlonger  failed   2 of 6 tasks failed"].join("\n"),
    );
  });

  it("prints durations in the largest two units", () => {
    expect([950, 12_400, 245_000, 7_380_000, 273_600_000].map(duration)).toEqual([
      "950 ms",
      "12 s",
      "4 m 05 s",
      "2 h 03 m",
      "3 d 04 h",
    ]);
    expect(duration(-2000)).toBe("-2 s");
    expect(duration(Number.NaN)).toBe("-");
  });

  it("draws a bar of the fraction done, clamped to 0..1", () => {
    expect(bar(0.5, 10)).toBe("[#####.....]  50%");
    expect(bar(1, 4)).toBe("[####] 100%");
    expect(bar(2, 4)).toBe("[####] 100%");
    expect(bar(-1, 4)).toBe("[....]   0%");
  });

  it("clips a long cell with a mark", () => {
    expect(clip("abcdef", 4)).toBe("abc…");
    expect(clip("abc", 4)).toBe("abc");
  });

  it("prints what tasks wrote without its control characters: a handler's error cannot drive the terminal", () => {
    const written: string[] = [];
    const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
      written.push(String(chunk));
      return true;
    });
    try {
      // Retitles the terminal (OSC 0, ended by BEL), then turns the text red (CSI).
      print(table(["ERROR"], [["\x1b]0;PWNED\x07\x1b[31mRED\tx"]]));
    } finally {
      write.mockRestore();
    }
    expect(written).toEqual(["ERROR\n\\x1b]0;PWNED\\x07\\x1b[31mRED\\x09x\n"]);
  });
});
