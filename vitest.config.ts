import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each integration file owns a nats-server; two cores cannot run many at once.
    maxWorkers: 2,
    pool: "forks",
    allowOnly: false,
  },
});
