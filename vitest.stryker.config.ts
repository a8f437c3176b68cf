import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

/**
 * The fast tests, for mutation testing (`npm run mutation`): every test file
 * under test/ and examples/ that does not start a nats-server. Stryker runs
 * the suite once per mutant, so a test that waits on a real server costs
 * seconds each time; the memory broker, fakes and ManualClock cost
 * milliseconds.
 *
 * The list is found, not written down: a test file is left out when its text
 * reaches for a real server (the harnesses that start nats-server or a cluster, the chaos runner, or the
 * runtime helper built on it). A new fast test is picked up without editing
 * this file.
 */
const needsNatsServer =
  /startNatsServer|startNatsCluster|useNatsRuntime|harness\/nats-server|harness\/nats-cluster|harness\/runtime|chaos-run/;

const root = fileURLToPath(new URL(".", import.meta.url));

const testFiles = (dir: string): string[] =>
  readdirSync(join(root, dir), { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith(".test.ts"))
    .map((file) => join(root, dir, file));

const fastTests = ["test", "examples"]
  .flatMap(testFiles)
  .filter((file) => !needsNatsServer.test(readFileSync(file, "utf8")))
  .map((file) => relative(root, file).replaceAll("\\", "/"))
  .sort();

export default defineConfig({
  root,
  test: {
    include: fastTests,
    // Each fast test takes milliseconds. A mutant that makes one hang fails it here (killed) in
    // seconds, instead of running into Stryker's own timeout, which restarts the test process.
    testTimeout: 2_500,
    hookTimeout: 10_000,
    allowOnly: false,
    // Stryker runs the covering tests once per mutant; without isolation the modules a test file
    // imports (xstate, effect, src/) stay loaded between runs instead of being imported again
    // each time. Safe here: Stryker switches mutants on at run time, not at import, and static
    // mutants (the ones that would need a fresh import) are left out (stryker.config.mjs).
    isolate: false,
  },
});
