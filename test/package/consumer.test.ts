/**
 * The package as users get it: `npm pack`, the tarball installed into a fresh
 * project (once per run, shared by every case), then a job run from plain
 * Node ESM, from CommonJS `require`, and from strict TypeScript compiled by
 * tsc with `moduleResolution` node16, nodenext and bundler (`skipLibCheck:
 * false`, so the published `.d.ts` files must compile too) and node10 (to
 * ESM and to CommonJS) — each on the memory broker and on a real
 * nats-server. The oracle is what the consumer's own handler saw, printed by
 * the consumer process, and what npm says it installed.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { packTarball, repo } from "./packed-tarball.ts";

const run = promisify(execFile);
const tsc = path.join(repo, "node_modules/typescript/bin/tsc");

/** The body every consumer runs: one job of three tasks, on NATS when NATS_URL is set, else in memory. */
const jobBody = `
  const seen = [];
  const rt = await createRuntime({ logger: pino({ level: "silent" }) });
  const worker = rt.workers.start({
    queue: "consumer",
    handler: async (task) => {
      seen.push(task.payload);
      return task.payload * 2;
    },
  });
  const job = await rt.jobs.submit({ queue: "consumer", tasks: [1, 2, 3] });
  const final = await job.done();
  await worker.stop();
  await rt.stop();
  const viaTesting = await runJob((task) => task.payload + 1, [5]);
  console.log("RESULT " + JSON.stringify({ broker: rt.broker, status: final.status, done: final.done, seen: seen.sort(), testing: viaTesting.status }));
`;

const esm = `import { pino } from "pino";
import { createRuntime } from "jetstate-jobs";
import { runJob } from "jetstate-jobs/testing";
${jobBody}`;

const cjs = `const { pino } = require("pino");
const { createRuntime } = require("jetstate-jobs");
const { runJob } = require("jetstate-jobs/testing");
(async () => {${jobBody}})().catch((error) => { console.error(error); process.exit(1); });
`;

const typedImports = `import { pino } from "pino";
import { createRuntime, InvalidArgument, type JobSnapshot, PermanentError, type Runtime, type Task } from "jetstate-jobs";
import { ManualClock, runJob } from "jetstate-jobs/testing";
`;

/** Typed: the handler's payload and result types flow through the published declarations. */
const typedBody = `
const seen: number[] = [];
const rt: Runtime = await createRuntime({ logger: pino({ level: "silent" }) });
const worker = rt.workers.start<number, number>({
  queue: "consumer",
  handler: async (task: Task<number>) => {
    if (task.payload < 0) throw new PermanentError("negative");
    seen.push(task.payload);
    return task.payload * 2;
  },
});
const job = await rt.jobs.submit({ queue: "consumer", tasks: [1, 2, 3] });
const final: JobSnapshot = await job.done();
await worker.stop();
await rt.stop();
const clock: ManualClock = new ManualClock();
const viaTesting = await runJob((task: Task<number>) => task.payload + 1, [5]);
const bad: boolean = new InvalidArgument({ message: "x", field: "y" }) instanceof Error;
console.log("RESULT " + JSON.stringify({ broker: rt.broker, status: final.status, done: final.done, seen: seen.sort(), testing: viaTesting.status, clock: typeof clock.now(), bad }));
`;

/**
 * The TypeScript set-ups a consumer may have. node10 (alias "node") reads
 * `types` and `typesVersions`, never `exports`: `typesVersions` is how it
 * finds `jetstate-jobs/testing`. Its set-ups skip the library check: effect 4
 * publishes its types through `exports` only, so node10 cannot find the
 * effect types our error classes' declarations name (to a node10 user they
 * are `any`; skipLibCheck, on in what `tsc --init` writes, hides the error).
 */
const setups = {
  node16: { module: "node16", moduleResolution: "node16", main: "main.ts" },
  nodenext: { module: "nodenext", moduleResolution: "nodenext", main: "main.ts" },
  bundler: { module: "esnext", moduleResolution: "bundler", main: "main.ts" },
  node10: { module: "esnext", moduleResolution: "node10", main: "main.ts" },
  "node10, commonjs": { module: "commonjs", moduleResolution: "node10", main: "main.cts" },
} as const;
type Setup = keyof typeof setups;

/** `node10, commonjs` → `node10-commonjs`: the set-up's tsconfig and output directory. */
const slug = (setup: Setup) => setup.replace(/\W+/g, "-");

const tsconfig = (setup: Setup) => {
  const { module, moduleResolution, main } = setups[setup];
  const node10 = moduleResolution === "node10";
  return JSON.stringify({
    compilerOptions: {
      target: "ES2022",
      module,
      moduleResolution,
      strict: true,
      skipLibCheck: node10,
      // pino's declarations default-import a CommonJS module: node16 and nodenext allow it, node10 needs the flag.
      ...(node10 && { esModuleInterop: true }),
      types: ["node"],
      outDir: `out-${slug(setup)}`,
    },
    files: [main],
  });
};

/** The compiled consumer: main.ts gives main.js, main.cts main.cjs. */
const compiledMain = (setup: Setup) =>
  `out-${slug(setup)}/${setups[setup].main.replace(/\.ts$/, ".js").replace(/\.cts$/, ".cjs")}`;

describe("the packed package in a fresh project", () => {
  let project: string;
  let server: NatsServerHandle;
  let installLog = "";

  const compiled = new Map<Setup, Promise<string>>();
  /** Compiles the consumer once per set-up; tsc failing (a type error in our .d.ts, say) fails the case. */
  const compile = (setup: Setup) => {
    let done = compiled.get(setup);
    if (!done) {
      done = run(process.execPath, [tsc, "-p", `tsconfig.${slug(setup)}.json`], { cwd: project }).then(
        () => compiledMain(setup),
        (error: { stdout?: string; stderr?: string; message?: string }) => {
          throw new Error(`tsc (${setup}) failed: ${error.message}\n${error.stdout}\n${error.stderr}`);
        },
      );
      compiled.set(setup, done);
    }
    return done;
  };

  beforeAll(async () => {
    project = await mkdtemp(path.join(tmpdir(), "jetstate-consumer-"));
    const [, started] = await Promise.all([
      (async () => {
        const tarball = await packTarball(project);
        await writeFile(
          path.join(project, "package.json"),
          JSON.stringify({ name: "consumer", private: true, type: "module" }),
        );
        // --engine-strict: a dependency asking for a newer Node than this one fails the install.
        const install = await run(
          "npm",
          [
            "install",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
            "--engine-strict",
            tarball,
            "pino@10",
            "@types/node@20",
          ],
          { cwd: project },
        );
        installLog = install.stdout + install.stderr;
      })(),
      startNatsServer(),
    ]);
    server = started;
    await writeFile(path.join(project, "esm.mjs"), esm);
    await writeFile(path.join(project, "cjs.cjs"), cjs);
    await writeFile(path.join(project, "main.ts"), typedImports + typedBody);
    // CommonJS has no top-level await.
    await writeFile(
      path.join(project, "main.cts"),
      `${typedImports}(async () => {${typedBody}})().catch((error) => { console.error(error); process.exit(1); });\n`,
    );
    for (const setup of Object.keys(setups) as Setup[]) {
      await writeFile(path.join(project, `tsconfig.${slug(setup)}.json`), tsconfig(setup));
      // Every compile starts now, side by side; each case awaits its own (and fails on its error).
      compile(setup).catch(() => undefined);
    }
  }, 180_000);

  afterAll(async () => {
    await server?.dispose();
    if (project) await rm(project, { recursive: true, force: true });
  });

  it("installs on this Node without an engine warning, and without @nats-io/nuid (nats.js is bundled)", async () => {
    expect(installLog).not.toMatch(/EBADENGINE/);
    const { stdout } = await run("npm", ["ls", "--all", "--json"], { cwd: project });
    const tree = JSON.stringify(JSON.parse(stdout));
    expect(tree).toContain('"jetstate-jobs"');
    expect(tree).not.toContain("@nats-io/");
  });

  it("installs the jetstate-jobs bin: it runs by its shebang, prints its help and reads a server", async () => {
    const bin = path.join(project, "node_modules/.bin/jetstate-jobs");
    const env = { ...process.env };
    delete env.NATS_URL;
    const help = await run(bin, ["--help"], { cwd: project, env, timeout: 30_000 });
    expect(help.stdout).toMatch(/^Usage: jetstate-jobs/m);
    expect(help.stdout).toMatch(/^\s+4\s+NATS unreachable/m);
    // Against the test's server: one JSON document, a page of job records.
    const listed = await run(bin, ["jobs", "ls", "--json"], {
      cwd: project,
      env: { ...env, NATS_URL: server.url },
      timeout: 30_000,
    });
    expect(JSON.parse(listed.stdout)).toMatchObject({ jobs: expect.any(Array) });
  });

  /** Each consumer, by the script node runs (the TypeScript ones once tsc wrote them). */
  const entry = new Map<string, () => Promise<string>>([
    ["esm", async () => "esm.mjs"],
    ["cjs", async () => "cjs.cjs"],
    ...(Object.keys(setups) as Setup[]).map(
      (setup) => [`typescript (${setup})`, () => compile(setup)] as [string, () => Promise<string>],
    ),
  ]);

  const cases = [...entry.keys()].flatMap((kind) =>
    (["memory", "nats"] as const).map((broker) => [kind, broker] as const),
  );

  it.each(cases)("%s on %s runs a job", async (kind, broker) => {
    const script = await entry.get(kind)!();
    const env = { ...process.env };
    delete env.NATS_URL;
    if (broker === "nats") env.NATS_URL = server.url;
    const { stdout } = await run(process.execPath, [script], { cwd: project, env, timeout: 60_000 });
    const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
    expect(line, stdout).toBeDefined();
    expect(JSON.parse(line!.slice("RESULT ".length))).toMatchObject({
      broker,
      status: "succeeded",
      done: 3,
      seen: [1, 2, 3],
      testing: "succeeded",
    });
  });
});
