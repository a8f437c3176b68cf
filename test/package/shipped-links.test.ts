/**
 * The markdown the package ships (README.md, CHANGELOG.md, docs/…) is read on
 * npm's page and in node_modules with nothing but the tarball's files beside
 * it: every relative link in it must name a file, or a folder holding files,
 * of the tarball. The oracle is the packed tarball itself, unpacked.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packTarball } from "./packed-tarball.ts";

const run = promisify(execFile);

/** Every file under `dir`, as posix paths relative to it. */
const filesUnder = async (dir: string): Promise<string[]> =>
  (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)).split(path.sep).join("/"));

/** Markdown with its code blocks and code spans blanked: a `[a](b)` in code is no link. */
const withoutCode = (markdown: string): string => {
  let fence: string | undefined;
  const prose = markdown.split("\n").map((line) => {
    const opening = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence === undefined && opening) fence = opening;
    else if (fence !== undefined && opening?.startsWith(fence)) fence = undefined;
    else if (fence === undefined) return line;
    return "";
  });
  return prose.join("\n").replace(/(`+)[\s\S]*?\1/g, " ");
};

/** The targets of a markdown text's links that are not absolute URLs or bare anchors. */
const relativeLinks = (markdown: string): string[] => {
  const prose = withoutCode(markdown);
  const targets = [
    // [text](target "title"), ![alt](target), [text](<target with spaces>)
    ...[...prose.matchAll(/\]\(\s*(?:<([^>]*)>|([^\s)]+))/g)].map((m) => m[1] ?? m[2]),
    // [label]: target
    ...[...prose.matchAll(/^ {0,3}\[[^\]]+\]:\s*(?:<([^>]*)>|(\S+))/gm)].map((m) => m[1] ?? m[2]),
    // <a href="target">, <img src="target">
    ...[...prose.matchAll(/<[a-z]+\s[^>]*?\b(?:href|src)\s*=\s*["']([^"']*)["']/gi)].map((m) => m[1]),
  ] as string[];
  return targets.filter((target) => !/^([a-z][a-z\d+.-]*:|\/\/|#)/i.test(target));
};

/** Where `target`, linked from the package file `from`, points inside the package ("../x" if outside). */
const resolveLink = (from: string, target: string): string => {
  const file = decodeURIComponent(target.replace(/[?#].*$/, ""));
  return path.posix.normalize(
    file.startsWith("/") ? file.slice(1) : path.posix.join(path.posix.dirname(from), file),
  );
};

describe("the markdown in the packed package", () => {
  let unpacked: string;
  let files: string[];

  beforeAll(async () => {
    unpacked = await mkdtemp(path.join(tmpdir(), "jetstate-tarball-"));
    const tarball = await packTarball(unpacked);
    await run("tar", ["-xzf", tarball, "-C", unpacked]);
    files = await filesUnder(path.join(unpacked, "package"));
  }, 180_000);

  afterAll(async () => {
    if (unpacked) await rm(unpacked, { recursive: true, force: true });
  });

  it("reads links in every form, and none in code", () => {
    const sample = [
      "See [the guide](docs/guide.md#setup), ![a chart](img/chart.png 'title') and [a folder](examples/).",
      "[spaced](<docs/a b.md>) [web](https://example.org/x.md) [mail](mailto:a@b.c) [here](#use-it)",
      '[ref]: ../outside.md "title"',
      '<a href="deploy/x.yml">x</a> <img src="/logo.svg">',
      "`[not](code.md)` and ``[nor](this.md)``",
      "```ts",
      "const x = a[0](b.md);",
      "```",
    ].join("\n");
    expect(relativeLinks(sample)).toEqual([
      "docs/guide.md#setup",
      "img/chart.png",
      "examples/",
      "docs/a b.md",
      "../outside.md",
      "deploy/x.yml",
      "/logo.svg",
    ]);
    expect(resolveLink("docs/ops.md", "../README.md#use-it")).toBe("README.md");
    expect(resolveLink("docs/ops.md", "../../x.md")).toBe("../x.md");
  });

  it("every relative link in every shipped markdown file names a file of the tarball", async () => {
    const markdown = files.filter((file) => /\.(md|markdown)$/i.test(file));
    expect(markdown).toContain("README.md");
    const dead: string[] = [];
    for (const file of markdown) {
      const text = await readFile(path.join(unpacked, "package", file), "utf8");
      for (const target of relativeLinks(text)) {
        const resolved = resolveLink(file, target);
        const folder = `${resolved.replace(/\/$/, "")}/`;
        if (!files.includes(resolved) && !files.some((shipped) => shipped.startsWith(folder)))
          dead.push(`${file}: (${target})`);
      }
    }
    expect(dead).toEqual([]);
  });
});
