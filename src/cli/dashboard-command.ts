import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { serve } from "@hono/node-server";
import type { Command } from "commander";
import { createDashboard, createMetrics, type TokenConfig } from "../index.ts";
import { CliFailure, ExitCode } from "./exit-codes.ts";
import { print } from "./format.ts";
import { type GlobalOptions, openRuntime } from "./session.ts";

const usage = (message: string) => new CliFailure("InvalidArgument", message, ExitCode.usage);

const portOf = (value: string, flag: string): number => {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    throw usage(`${flag}: must be a port number (0: any free one), got ${JSON.stringify(value)}`);
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

/** Serves `fetch` on `host:port`; resolves with the port it got, rejects when it cannot listen. */
const listen = (
  fetch: (request: Request) => Promise<Response>,
  host: string,
  port: number,
): Promise<{ port: number; close(): void }> =>
  new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname: host, port }, (info) =>
      resolve({ port: info.port, close: () => server.close() }),
    );
    server.once("error", (error: Error) =>
      reject(
        new CliFailure("ListenFailed", `cannot listen on ${host}:${port}: ${error.message}`, ExitCode.failed),
      ),
    );
  });

const urlOf = (host: string, port: number) => `http://${host.includes(":") ? `[${host}]` : host}:${port}/`;

export const registerDashboard = (program: Command, globals: () => GlobalOptions): void => {
  program
    .command("dashboard")
    .description("serve the live dashboard (and, with --metrics-port, a Prometheus endpoint) until stopped")
    .option("--port <port>", "port to listen on (0: any free one)", "8080")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option(
      "--tokens <file>",
      "JSON file of bearer tokens ({ token: { identity, role, queues } }); default: one random operate token",
    )
    .option(
      "--metrics-port <port>",
      "also serve GET /metrics, without a token, on a listener of its own (0: any free port)",
    )
    .option(
      "--metrics-host <host>",
      "address of the metrics listener: where only Prometheus reaches",
      "127.0.0.1",
    )
    .action(
      async (flags: {
        port: string;
        host: string;
        tokens?: string;
        metricsPort?: string;
        metricsHost: string;
      }) => {
        const g = globals();
        const port = portOf(flags.port, "--port");
        const metricsPort =
          flags.metricsPort === undefined ? undefined : portOf(flags.metricsPort, "--metrics-port");
        const { tokens, generated } = tokensFrom(flags.tokens);
        // Reads jobs and acts on them (cancel, redrive) but supervises nothing: a redriven job is
        // taken over by a supervisor, as after the CLI's `dlq redrive`.
        const rt = await openRuntime(g, "jobs");
        const closers: Array<() => void> = [];
        const stop = async (code: ExitCode) => {
          for (const close of closers.splice(0)) close();
          await rt.stop();
          process.exit(code);
        };
        let shown: { url: string; metrics?: string };
        try {
          const dashboard = createDashboard(rt, { tokens });
          const served = await listen((request) => dashboard.fetch(request), flags.host, port);
          closers.push(served.close);
          const base = urlOf(flags.host, served.port);
          shown = { url: generated ? `${base}#token=${generated}` : base };
          if (metricsPort !== undefined) {
            const metrics = createMetrics(rt);
            closers.push(() => metrics.stop());
            const scraped = await listen((request) => metrics.fetch(request), flags.metricsHost, metricsPort);
            closers.push(scraped.close);
            shown.metrics = `${urlOf(flags.metricsHost, scraped.port)}metrics`;
          }
        } catch (error) {
          for (const close of closers.splice(0)) close();
          await rt.stop();
          throw error;
        }
        // SIGTERM (a service manager's stop): 0; Ctrl-C: 130. Either way the runtime stops first.
        process.removeAllListeners("SIGINT");
        process.once("SIGTERM", () => void stop(ExitCode.ok));
        process.once("SIGINT", () => void stop(ExitCode.interrupted));
        // One line either way: a script reads the URL (and the port it got) from it.
        if (g.json) print(JSON.stringify(shown));
        else print(`dashboard: ${shown.url}${shown.metrics ? `\nmetrics: ${shown.metrics}` : ""}`);
        // Served until a signal: the command never returns, or the CLI's exit would end it.
        await new Promise<never>(() => undefined);
      },
    );
};
