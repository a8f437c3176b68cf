/**
 * `npm run serve`: a runtime on NATS_URL and the HTTP pull API for remote
 * workers on HOST:PORT (default 127.0.0.1:8080).
 *
 *   JETSTATE_TOKENS="<token>=<worker identity>,…"   required; tokens of ≥ 16 characters
 *   JETSTATE_RECEIPT_SECRET=…                        optional; share it between instances behind one balancer
 *   NATS_URL=nats://127.0.0.1:4222 PORT=8080 HOST=127.0.0.1
 */
import { serve } from "@hono/node-server";
import { createHttpApi, createRuntime } from "../src/index.ts";

/** "token=identity,token2=identity2" → { token: identity, … } (a token may itself contain "="). */
const parseTokens = (text: string): Record<string, string> => {
  const tokens: Record<string, string> = {};
  for (const pair of text.split(",").map((p) => p.trim())) {
    if (pair === "") continue;
    const at = pair.lastIndexOf("=");
    if (at <= 0) throw new Error(`JETSTATE_TOKENS: "${pair.slice(0, 4)}…" is not token=identity`);
    tokens[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return tokens;
};

const rt = await createRuntime({ name: "jetstate-http" });
const api = createHttpApi(rt, {
  tokens: parseTokens(process.env.JETSTATE_TOKENS ?? ""),
  ...(process.env.JETSTATE_RECEIPT_SECRET ? { receiptSecret: process.env.JETSTATE_RECEIPT_SECRET } : {}),
});
const hostname = process.env.HOST ?? "127.0.0.1";
const server = serve({ fetch: api.fetch, hostname, port: Number(process.env.PORT ?? 8080) }, (info) =>
  rt.logger.info({ url: `http://${hostname}:${info.port}` }, "HTTP pull API listening"),
);

const shutdown = () => {
  server.close();
  void rt.stop().then(() => process.exit(0));
};
process.once("SIGINT", shutdown);
process.once("SIGTERM", shutdown);
