import { defineConfig, type Options } from "tsup";

/** nats.js's nkeys and tweetnacl are CommonJS and call `require`: give the ESM build one. */
const esmRequire =
  'import { createRequire as __jetstateCreateRequire } from "node:module";\nconst require = __jetstateCreateRequire(import.meta.url);';

/**
 * The `jetstate-jobs` bin: one ESM file, the runtime bundled in (a bin is run,
 * not imported, so it shares no module with the library's entries),
 * executable through its shebang. Exported for test/harness/cli.ts, which
 * builds the same file into a directory of its own.
 */
export const cliBuild: Options = {
  entry: { cli: "src/cli/main.ts" },
  format: ["esm"],
  target: "node20",
  platform: "node",
  dts: false,
  splitting: false,
  clean: false,
  treeshake: true,
  noExternal: [/^@nats-io\//, "tweetnacl"],
  banner: { js: `#!/usr/bin/env node\n${esmRequire}` },
};

/**
 * The published build: ESM and CommonJS with their type declarations, from the
 * same sources the tests run. nats.js is bundled, not a dependency: its
 * `@nats-io/nuid` 3 declares Node ≥ 22, nats.js pins it exactly, and a
 * package's `overrides` do not reach the projects that install it; bundled,
 * users install nothing that asks for more than our `engines`.
 */
export default defineConfig([
  {
    entry: { index: "src/index.ts", testing: "src/testing.ts" },
    format: ["esm", "cjs"],
    target: "node20",
    platform: "node",
    // `@internal` members are left out: they would mention nats.js's types, and
    // users have no @nats-io package to resolve them from.
    dts: { compilerOptions: { stripInternal: true } },
    // One copy of each module for both entry points, so `PermanentError` from
    // `jetstate-jobs` is the class the runtime from `jetstate-jobs/testing` checks.
    splitting: true,
    // The CLI's build (below) writes into dist/ too: its files are not this build's to remove.
    clean: ["!cli.js", "!cli.js.map"],
    treeshake: true,
    noExternal: [/^@nats-io\//, "tweetnacl"],
    banner: ({ format }) => (format === "esm" ? { js: esmRequire } : {}),
  },
  cliBuild,
]);
