/**
 * The layers of src/, checked by `npm run check` (docs/architecture.md draws
 * them). Type-only imports count: a type import is still a dependency a
 * reader follows, and a cycle through one is still a cycle.
 */
const nodeBuiltin = "^node:";

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-cycles",
      comment: "No import cycle anywhere, type imports included.",
      severity: "error",
      from: { path: "^src/" },
      to: { circular: true },
    },
    {
      name: "kernel-imports-only-kernel",
      comment: "The kernel (records, rules, errors, clock, logger, wire format) depends on nothing else in src/.",
      severity: "error",
      from: { path: "^src/kernel/" },
      to: { path: "^src/", pathNot: "^src/kernel/" },
    },
    {
      name: "kernel-libraries",
      comment: "The kernel's only libraries: Effect (Schema, tagged errors) and pino (the logger type).",
      severity: "error",
      from: { path: "^src/kernel/" },
      to: { dependencyTypes: ["npm", "npm-dev", "npm-optional", "npm-peer", "npm-no-pkg", "npm-unknown"], pathNot: "node_modules/(effect|pino)/" },
    },
    {
      name: "machines-are-pure",
      comment: "Statecharts import xstate and the kernel, nothing else: no I/O, no effects, no adapters.",
      severity: "error",
      from: { path: "^src/machines/" },
      to: { pathNot: ["^src/(kernel|machines)/", "node_modules/xstate/"] },
    },
    {
      name: "effects-see-ports-only",
      comment: "Effects reach the outside world through the ports (src/adapters/*.ts), never an implementation or the API.",
      severity: "error",
      from: { path: "^src/effects/" },
      to: { path: ["^src/api/", "^src/adapters/[^/]+/", "^src/index\\.ts", "^src/testing\\.ts"] },
    },
    {
      name: "adapters-never-the-api",
      comment: "Adapters own their context (e.g. nats/nats-context.ts); the API wires them, not the other way round.",
      severity: "error",
      from: { path: "^src/adapters/" },
      to: { path: ["^src/api/", "^src/index\\.ts", "^src/testing\\.ts"] },
    },
    {
      name: "adapters-stay-apart",
      comment: "The NATS, memory and HTTP adapters share ports and the kernel, not each other's files.",
      severity: "error",
      from: { path: "^src/adapters/(nats|memory|http)/" },
      to: { path: "^src/adapters/(nats|memory|http)/", pathNot: "^src/adapters/$1/" },
    },
    {
      name: "client-library-in-its-adapter",
      comment: "Only the NATS adapter imports nats.js; only the HTTP adapter imports Hono.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/adapters/nats/" },
      to: { path: "node_modules/@nats-io/" },
    },
    {
      name: "hono-in-its-adapter",
      comment: "Hono, the router, only in the HTTP adapter; the CLI may serve a Fetch handler with @hono/node-server.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/adapters/http/" },
      to: { path: "node_modules/(hono|@hono)/", pathNot: "node_modules/@hono/node-server/" },
    },
    {
      name: "node-server-in-the-cli",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/(adapters/http|cli)/" },
      to: { path: "node_modules/@hono/node-server/" },
    },
    {
      name: "prom-client-in-the-metrics",
      comment: "Only the metrics files (src/api/metrics*.ts) import prom-client: the rest of jetstate reports through core.telemetry.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/api/metrics[^/]*\\.ts$" },
      to: { path: "node_modules/prom-client/" },
    },
    {
      name: "cli-uses-the-public-api",
      comment: "The CLI (src/cli/) is a user of jetstate: the public API (src/index.ts), commander and node builtins, nothing else of src/.",
      severity: "error",
      from: { path: "^src/cli/" },
      to: { path: "^src/", pathNot: ["^src/cli/", "^src/index\\.ts$"] },
    },
    {
      name: "cli-libraries",
      comment: "The CLI's libraries are commander and, to serve the dashboard, @hono/node-server; the runtime's it reaches through the public API.",
      severity: "error",
      from: { path: "^src/cli/" },
      to: {
        dependencyTypes: ["npm", "npm-dev", "npm-optional", "npm-peer", "npm-no-pkg", "npm-unknown"],
        pathNot: "node_modules/(commander|@hono/node-server)/",
      },
    },
    {
      name: "nothing-imports-the-cli",
      comment: "The CLI is an entry point (the bin), not a library: nothing in src/ outside it imports it.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/cli/" },
      to: { path: "^src/cli/" },
    },
    {
      name: "no-orphans",
      comment: "A file nothing imports is dead code (the entry points excepted).",
      severity: "error",
      from: { orphan: true, path: "^src/", pathNot: "^src/(index|testing|cli/main)\\.ts$" },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default", "types"] },
    exclude: { path: nodeBuiltin },
  },
};
