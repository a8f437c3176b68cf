import { type ServerType, serve } from "@hono/node-server";

/** An HTTP app served on a random loopback port, for tests that talk to it over the wire. */
export interface ServedApp {
  readonly baseUrl: string;
  /** Stops listening and drops the keep-alive connections left open. */
  close(): Promise<void>;
}

export const serveOnLoopback = (
  fetch: (request: Request) => Response | Promise<Response>,
): Promise<ServedApp> =>
  new Promise((resolve) => {
    const http: ServerType = serve({ fetch, hostname: "127.0.0.1", port: 0 }, (info) =>
      resolve({
        baseUrl: `http://127.0.0.1:${info.port}`,
        close: () =>
          new Promise<void>((closed) => {
            http.close(() => closed());
            (http as { closeAllConnections?: () => void }).closeAllConnections?.();
          }),
      }),
    );
  });

/** A POST over the wire to a served app, as a remote worker makes it: its status and JSON answer. */
export const postOverWire = async (app: ServedApp, token: string, path: string, body: unknown) => {
  const res = await fetch(`${app.baseUrl}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
};

/** The answer to a POST made in-process: its status and its JSON body. */
export interface PostAnswer<Json> {
  readonly status: number;
  readonly json: Json;
}

/**
 * POSTs `body` as JSON to `path` of an app called in-process (`app.fetch`, no socket), with
 * `token` as its bearer token, and reads the JSON answer.
 */
export const postJson = async <Json = Record<string, unknown>>(
  app: { fetch(request: Request): Response | Promise<Response> },
  token: string,
  path: string,
  body: unknown,
): Promise<PostAnswer<Json>> => {
  const res = await app.fetch(
    new Request(`http://127.0.0.1${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    }),
  );
  return { status: res.status, json: (await res.json()) as Json };
};
