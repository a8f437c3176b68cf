import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    // The packed-package tests have their own run (npm run test:package), and so has the
    // chaos suite (npm run chaos, vitest.chaos.config.ts): its files end in .chaos.test.ts.
    exclude: ["test/package/**", "test/chaos/**", "**/node_modules/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each integration file owns a nats-server, and most of a file's time is spent waiting (on
    // timers, servers, child processes): three files at once keep two cores busy. Measured on
    // 2 cores, the whole suite: 489 s with 2, 373 s with 3; with 4, 325 s but two timing-bound
    // tests failed (a heartbeat starved past its period, a takeover past its wait).
    maxWorkers: 3,
    pool: "forks",
    // One module graph per worker, not per file: each file imported src/ and its dependencies
    // anew (331 s of imports summed over the suite, a third of its time). The whole suite on
    // 2 cores: 580 s isolated, 411 s not; every file passed both ways.
    isolate: false,
    allowOnly: false,
  },
});
