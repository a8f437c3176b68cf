/**
 * Every ```ts block of README.md type-checks as written, so a snippet cannot rot.
 * Each block becomes a module of its own in a temporary directory, `jetstate-jobs` and
 * `jetstate-jobs/testing` are mapped to src/, and tsc (the project's, same strictness as
 * tsconfig.json) checks them. A block may use only what it imports, plus the reader's
 * own names declared in README_CONTEXT below (a runtime `rt` made earlier, the
 * reader's `urls`, `runModel`, …): a jetstate name it forgets to import is an error.
 * Failures are reported at their README line.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const root = path.resolve(import.meta.dirname, "../..");

/** What the snippets take as given: the reader's code, never jetstate's. */
const README_CONTEXT = `
import type { JobHandle, Runtime, StandardSchema, Task } from "jetstate-jobs";
declare global {
  /** A runtime the reader made earlier with createRuntime(). */
  const rt: Runtime;
  /** A job the reader submitted earlier. */
  const job: JobHandle;
  const urls: string[];
  const tasks: { url: string }[];
  const ImageSchema: StandardSchema<{ url: string }>;
  function runModel(image: ArrayBuffer): Promise<number>;
  function queueDepth(target: string): number;
  function restartPool(from: string, to: string): Promise<void>;
  function myHandler(task: Task<{ url: string }>): Promise<{ boxes: number }>;
  const task1: { url: string };
  const task2: { url: string };
  /** Images in groups, one child job per group (flows). */
  const parts: { url: string }[][];
  /** The task a handler runs (flows: a parent reads its children's results). */
  const task: Task<unknown>;
  const reminder: { to: string };
  const digest: { to: string };
  const a: { to: string };
  const b: { to: string };
  const c: { to: string };
  const t1: Date;
  const t3: Date;
}
export {};
`;

interface Snippet {
  readonly file: string;
  /** README line of the block's first code line. */
  readonly line: number;
  readonly code: string;
}

const snippetsOf = (markdown: string): Snippet[] => {
  const lines = markdown.split("\n");
  const found: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]?.trim() !== "```ts") continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end]?.trim() !== "```") end++;
    found.push({
      file: `snippet-${found.length + 1}.ts`,
      line: start + 1,
      code: `${lines.slice(start, end).join("\n")}\nexport {};\n`,
    });
    i = end;
  }
  return found;
};

const tsc = (project: string): Promise<{ code: number; output: string }> =>
  new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(root, "node_modules/typescript/bin/tsc"), "-p", project, "--pretty", "false"],
      { cwd: project, timeout: 120_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number(error.code ?? 1) : 0, output: stdout + stderr }),
    );
  });

describe("README.md snippets", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "jetstate-readme-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("every ```ts block type-checks as written", { timeout: 120_000 }, async () => {
    const snippets = snippetsOf(readFileSync(path.join(root, "README.md"), "utf8"));
    expect(snippets.length).toBeGreaterThanOrEqual(5);
    for (const s of snippets) writeFileSync(path.join(dir, s.file), s.code);
    writeFileSync(path.join(dir, "readme-context.d.ts"), README_CONTEXT);
    writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
    writeFileSync(
      path.join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          lib: ["ES2023"],
          types: ["node"],
          typeRoots: [path.join(root, "node_modules/@types")],
          strict: true,
          noUncheckedIndexedAccess: true,
          verbatimModuleSyntax: true,
          allowImportingTsExtensions: true,
          noEmit: true,
          skipLibCheck: true,
          esModuleInterop: true,
          isolatedModules: true,
          paths: {
            "jetstate-jobs": [path.join(root, "src/index.ts")],
            "jetstate-jobs/testing": [path.join(root, "src/testing.ts")],
          },
        },
        files: ["readme-context.d.ts", ...snippets.map((s) => s.file)],
      }),
    );
    const { code, output } = await tsc(dir);
    // "snippet-3.ts(5,3): error …" → "README.md:101:3 error …"
    const errors = output
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) =>
        l.replace(/^(snippet-\d+\.ts)\((\d+),(\d+)\):/, (_, file: string, row: string, col: string) => {
          const s = snippets.find((x) => x.file === file);
          return s ? `README.md:${s.line + Number(row) - 1}:${col}` : `${file}(${row},${col}):`;
        }),
      );
    expect(errors, "tsc on the README's ts blocks").toEqual([]);
    expect(code).toBe(0);
  });
});
