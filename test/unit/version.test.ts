import { readFileSync } from "node:fs";
import { expect, it } from "vitest";
import { version } from "../../src/api/version.ts";

it("the version workers announce is package.json's", () => {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  expect(version).toBe(pkg.version);
});
