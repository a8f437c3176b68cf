import { defineConfig } from "tsup";

/**
 * The published build: ESM and CommonJS with their type declarations, from the
 * same sources the tests run. nats.js is bundled, not a dependency: its
 * `@nats-io/nuid` 3 declares Node ≥ 22, nats.js pins it exactly, and a
 * package's `overrides` do not reach the projects that install it; bundled,
 * users install nothing that asks for more than our `engines`.
 */
export default defineConfig({
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
  clean: true,
  treeshake: true,
  noExternal: [/^@nats-io\//, "tweetnacl"],
  // nats.js's nkeys and tweetnacl are CommonJS and call `require`: give the ESM build one.
  banner: ({ format }) =>
    format === "esm"
      ? {
          js: 'import { createRequire as __jetstateCreateRequire } from "node:module";\nconst require = __jetstateCreateRequire(import.meta.url);',
        }
      : {},
});
