/**
 * Summarises V8 `.cpuprofile`s (from profile.ts or `node --cpu-prof`): the
 * functions with the most self time, summed over the files given, and where
 * each is defined.
 *   npx tsx bench/top-frames.ts <file.cpuprofile>... [--top 25] [--filter text]
 * tsx compiles a .ts file to one line, so its functions show as `file.ts:1:<column>`.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  readonly children?: number[];
}
interface Profile {
  readonly nodes: ProfileNode[];
  readonly samples: number[];
  readonly timeDeltas: number[];
  readonly startTime: number;
  readonly endTime: number;
}

export interface Frame {
  readonly name: string;
  readonly where: string;
  readonly selfMs: number;
  readonly selfPct: number;
}

const shortUrl = (url: string, line: number, column: number): string => {
  if (url === "") return "(native)";
  const trimmed = url
    .replace(/^file:\/\//, "")
    .replace(/^.*node_modules\//, "~/")
    .replace(`${process.cwd()}/`, "");
  return line === 0 && column > 0 ? `${trimmed}:1:${column}` : `${trimmed}:${line + 1}`;
};

export const topFrames = (profiles: Profile | readonly Profile[], top: number, filter?: string): Frame[] => {
  const merged = new Map<string, { name: string; where: string; us: number }>();
  let total = 0;
  const list = (Array.isArray(profiles) ? profiles : [profiles]) as readonly Profile[];
  for (const profile of list) {
    const byId = new Map(profile.nodes.map((node) => [node.id, node]));
    const selfUs = new Map<number, number>();
    profile.samples.forEach((id, k) => {
      selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[k] ?? 0));
    });
    total += profile.endTime - profile.startTime;
    for (const [id, us] of selfUs) {
      const { functionName, url, lineNumber, columnNumber } = byId.get(id)!.callFrame;
      const name = functionName || "(anonymous)";
      const where = shortUrl(url, lineNumber, columnNumber);
      const key = `${name}@${where}`;
      const entry = merged.get(key) ?? { name, where, us: 0 };
      entry.us += us;
      merged.set(key, entry);
    }
  }
  return [...merged.values()]
    .filter((f) => !filter || `${f.name} ${f.where}`.includes(filter))
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((f) => ({
      name: f.name,
      where: f.where,
      selfMs: Math.round(f.us / 1000),
      selfPct: Math.round((f.us / total) * 1000) / 10,
    }));
};

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: "string", default: "25" }, filter: { type: "string" } },
  });
  if (positionals.length === 0)
    throw new Error("usage: top-frames.ts <file.cpuprofile>... [--top 25] [--filter text]");
  const profiles = positionals.map((file) => JSON.parse(readFileSync(file, "utf8")) as Profile);
  const frames = topFrames(profiles, Number(values.top), values.filter);
  console.log(`| self ms | self % | function | where |\n| ---: | ---: | --- | --- |`);
  for (const f of frames) console.log(`| ${f.selfMs} | ${f.selfPct} | ${f.name} | ${f.where} |`);
}
