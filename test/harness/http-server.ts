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
