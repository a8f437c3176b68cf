import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { serve } from "@hono/node-server";
import type { Command } from "commander";
import { createDashboard, createMetrics, type TokenConfig } from "../index.ts";
import { CliFailure, ExitCode } from "./exit-codes.ts";
import { print } from "./format.ts";
import { type GlobalOptions, openRuntime } from "./session.ts";

const usage = (message: string) => new CliFailure("InvalidArgument", message, ExitCode.usage);

const portOf = (value: string): number => {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    throw usage(`--port: must be a port number (0: any free one), got ${JSON.stringify(value)}`);
  return port;
};

/**
 * The tokens of a `--tokens` file (`{ "<token>": { identity, role, queues } }`,
 * as `createDashboard` takes them), or one random `operate` token on every
 * queue: printed once in the URL, which is all a person at a terminal needs.
 */
const tokensFrom = (
  file: string | undefined,
): { tokens: Record<string, TokenConfig>; generated?: string } => {
  if (file === undefined) {
    const token = randomBytes(24).toString("base64url");
    return { tokens: { [token]: { identity: "cli", role: "operate", queues: "*" } }, generated: token };
  }
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw usage(`--tokens: cannot read ${file}: ${(error as Error).message}`);
  }
  try {
    return { tokens: JSON.parse(text) as Record<string, TokenConfig> };
  } catch {
    throw usage(`--tokens: ${file} is not JSON`);
  }
};

export const registerDashboard = (program: Command, globals: () => GlobalOptions): void => {
  program
    .command("dashboard")
    .description("serve the live dashboard (and, with --metrics, a Prometheus endpoint) until stopped")
    .option("--port <port>", "port to listen on (0: any free one)", "8080")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option(
      "--tokens <file>",
      "JSON file of bearer tokens ({ token: { identity, role, queues } }); default: one random operate token",
    )
    .option("--metrics", "also serve GET /metrics (no token: bind it where only Prometheus reaches)", false)
    .action(async (flags: { port: string; host: string; tokens?: string; metrics: boolean }) => {
      const g = globals();
      const port = portOf(flags.port);
      const { tokens, generated } = tokensFrom(flags.tokens);
      // Reads jobs and acts on them (cancel, redrive) but supervises nothing: a redriven job is
      // taken over by a supervisor, as after the CLI's `dlq redrive`.
      const rt = await openRuntime(g, "jobs");
      let dashboard: ReturnType<typeof createDashboard>;
      let metrics: ReturnType<typeof createMetrics> | undefined;
      try {
        dashboard = createDashboard(rt, { tokens });
        metrics = flags.metrics ? createMetrics(rt) : undefined;
      } catch (error) {
        await rt.stop();
        throw error;
      }
      const fetch = (request: Request) =>
        metrics && new URL(request.url).pathname === "/metrics"
          ? metrics.fetch(request)
          : dashboard.fetch(request);
      const listening = await new Promise<number>((resolve, reject) => {
        const server = serve({ fetch, hostname: flags.host, port }, (info) => resolve(info.port));
        server.once("error", reject);
        const stop = () => {
          server.close();
          metrics?.stop();
          void rt.stop().finally(() => process.exit(ExitCode.ok));
        };
        process.once("SIGTERM", stop);
      });
      const base = `http://${flags.host.includes(":") ? `[${flags.host}]` : flags.host}:${listening}/`;
      const shown = {
        url: generated ? `${base}#token=${generated}` : base,
        ...(metrics ? { metrics: `${base}metrics` } : {}),
      };
      // One line either way: a script reads the URL (and the port it got) from it.
      if (g.json) print(JSON.stringify(shown));
      else print(`dashboard: ${shown.url}${shown.metrics ? `\nmetrics: ${shown.metrics}` : ""}`);
      // Served until SIGTERM (or Ctrl-C): the command never returns, or the CLI's exit would end it.
      await new Promise<never>(() => undefined);
    });
};
