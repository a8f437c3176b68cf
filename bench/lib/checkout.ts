/**
 * Loads `createRuntime` from another checkout of jetstate, to measure two
 * versions in one process: its build when up to date (as this checkout's is
 * measured, bench/lib/jetstate.ts), else its sources.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { CreateRuntime } from "../jetstate-e2e.ts";
import { upToDateBuild } from "./jetstate.ts";

export const loadCheckout = async (dir: string): Promise<CreateRuntime> => {
  // Without the checkout's package.json ("type": "module") tsx would load it as CommonJS: not the same code.
  if (!existsSync(path.resolve(dir, "package.json"))) throw new Error(`${dir}: no package.json`);
  const index = pathToFileURL(upToDateBuild(path.resolve(dir)) ?? path.resolve(dir, "src/index.ts")).href;
  return ((await import(index)) as { createRuntime: CreateRuntime }).createRuntime;
};
