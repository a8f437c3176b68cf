/**
 * `npm run serve`: a runtime on NATS_URL and the HTTP pull API for remote
 * workers on HOST:PORT. `npm run serve -- --help` lists the variables; on
 * start it prints the values it uses (secrets only as set / not set).
 */
import { serve } from "@hono/node-server";
import { createHttpApi, createRuntime } from "../src/index.ts";

const USAGE = `npm run serve [-- --help]: the jetstate HTTP pull API for remote workers

Variables:
  JETSTATE_TOKENS          required. "<token>=<worker identity>,…"; tokens of at least 16
                           characters; the identity goes into every log line of that worker
  JETSTATE_RECEIPT_SECRET  optional (at least 32 bytes). Signs task receipts; give every
                           instance behind one load balancer the same one. Not set: a random
                           key of this process (receipts die with it)
  NATS_URL                 NATS server(s), comma-separated (default nats://127.0.0.1:4222)
  HOST                     address to listen on (default 127.0.0.1)
  PORT                     port to listen on (default 8080; 0 picks a free one)

Example:
  JETSTATE_TOKENS="$(openssl rand -hex 16)=gpu-box-7" NATS_URL=nats://127.0.0.1:4222 npm run serve
`;

if (process.argv.includes("--help") || process.argv.includes("-h")) {
  console.log(USAGE);
  process.exit(0);
}

/** What createHttpApi takes as a token (it says so only once the runtime is connecting). */
const tokenShape = /^[\x21-\x7e]{16,1024}$/;

/** "token=identity,token2=identity2" → { token: identity, … } (a token may itself contain "="). */
const parseTokens = (text: string): Record<string, string> => {
  const tokens: Record<string, string> = {};
  for (const pair of text.split(",").map((p) => p.trim())) {
    if (pair === "") continue;
    const at = pair.lastIndexOf("=");
    if (at <= 0) throw new Error(`JETSTATE_TOKENS: "${pair.slice(0, 4)}…" is not token=identity`);
    const token = pair.slice(0, at);
    if (!tokenShape.test(token)) {
      const n = Object.keys(tokens).length + 1;
      throw new Error(`JETSTATE_TOKENS: token #${n} must be 16–1024 visible ASCII characters, no spaces`);
    }
    tokens[token] = pair.slice(at + 1);
  }
  return tokens;
};

const fail = (message: string): never => {
  console.error(`${message}\n(npm run serve -- --help lists the variables)`);
  process.exit(1);
};

// Everything is checked before the runtime connects anywhere.
let tokens: Record<string, string> = {};
try {
  tokens = parseTokens(process.env.JETSTATE_TOKENS ?? "");
} catch (error) {
  fail((error as Error).message);
}
const identities = [...new Set(Object.values(tokens))];
if (identities.length === 0) fail("JETSTATE_TOKENS is not set: it is required (token=identity,…)");
const hostname = process.env.HOST ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 8080);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`PORT: "${process.env.PORT}" is not a port`);
const secret = process.env.JETSTATE_RECEIPT_SECRET;
const count = Object.keys(tokens).length;

console.log(`jetstate HTTP pull API (npm run serve -- --help lists the variables)
  NATS_URL                 ${process.env.NATS_URL ?? "nats://127.0.0.1:4222 (default)"}
  HOST                     ${hostname}
  PORT                     ${port}
  JETSTATE_TOKENS          ${count} token${count === 1 ? "" : "s"} for ${identities.join(", ")}
  JETSTATE_RECEIPT_SECRET  ${secret ? "set" : "not set: receipts are signed with a key of this process only"}`);

const rt = await createRuntime({ name: "jetstate-http", broker: "nats" });
let api: ReturnType<typeof createHttpApi>;
try {
  api = createHttpApi(rt, { tokens, ...(secret ? { receiptSecret: secret } : {}) });
} catch (error) {
  await rt.stop();
  fail((error as Error).message);
}
const server = serve({ fetch: (request) => api.fetch(request), hostname, port }, (info) =>
  rt.logger.info({ url: `http://${hostname}:${info.port}` }, "HTTP pull API listening"),
);

const shutdown = () => {
  server.close();
  void rt.stop().then(() => process.exit(0));
};
process.once("SIGINT", shutdown);
process.once("SIGTERM", shutdown);
