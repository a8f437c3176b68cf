import { defineConfig } from "vitest/config";

/**
 * `npm run test:package`: the packed package installed into fresh projects,
 * and the links of the markdown it ships (test/package/). Kept out of
 * `vitest run` because a strict tsc of the published types takes most of a
 * minute here; `.ci/run` runs it after `npm test`.
 */
export default defineConfig({
  test: {
    include: ["test/package/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 240_000,
    pool: "forks",
    // The files share dist/: each builds it when stale, and two builds at once would race.
    fileParallelism: false,
    allowOnly: false,
  },
});
