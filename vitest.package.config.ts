import { defineConfig } from "vitest/config";

/**
 * `npm run test:package`: the packed package installed into fresh projects
 * (test/package/). Kept out of `vitest run` because a strict tsc of the
 * published types takes most of a minute here; `.ci/run` runs it after
 * `npm test`.
 */
export default defineConfig({
  test: {
    include: ["test/package/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 240_000,
    pool: "forks",
    allowOnly: false,
  },
});
