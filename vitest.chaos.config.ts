import { defineConfig } from "vitest/config";

/**
 * The chaos suite (npm run chaos): 3-node clusters, worker processes and faults, one
 * scenario file at a time (each run owns three nats-servers and several processes; a
 * two-core machine cannot run two). Not part of npm test.
 */
export default defineConfig({
  test: {
    include: ["test/chaos/**/*.chaos.test.ts"],
    testTimeout: 15 * 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
    allowOnly: false,
  },
});
