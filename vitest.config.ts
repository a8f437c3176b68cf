import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    // The packed-package tests have their own run (npm run test:package), and so has the
    // chaos suite (npm run chaos, vitest.chaos.config.ts): its files end in .chaos.test.ts.
    exclude: ["test/package/**", "test/chaos/**", "**/node_modules/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each integration file owns a nats-server; two cores cannot run many at once.
    maxWorkers: 2,
    pool: "forks",
    allowOnly: false,
  },
});
