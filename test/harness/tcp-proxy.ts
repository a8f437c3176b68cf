import net from "node:net";
import { Transform } from "node:stream";

/**
 * A TCP proxy on a random loopback port in front of `target` (a nats://
 * URL): `cut()` drops every connection through it and refuses new ones
 * until `restore()`, so one client loses its server while the server and
 * its other clients stay up. `drop()` keeps the connections open and drops
 * the bytes instead, from the server only (the client's requests land, their
 * answers are lost) or both ways (a partition with no reset: the client
 * still counts itself connected); `reset()` ends that and every connection
 * through it, and new ones are served.
 */
export const tcpProxy = async (target: string) => {
  const { hostname, port } = new URL(target);
  let cut = false;
  let dropping: "none" | "fromServer" | "both" = "none";
  const sockets = new Set<net.Socket>();
  /** Passes the bytes on unless `drops()` says otherwise. */
  const gate = (drops: () => boolean) =>
    new Transform({ transform: (chunk, _encoding, done) => done(null, drops() ? undefined : chunk) });
  const server = net.createServer((client) => {
    if (cut) return client.destroy();
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    client.pipe(gate(() => dropping === "both")).pipe(upstream);
    upstream.pipe(gate(() => dropping !== "none")).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address() as net.AddressInfo;
  const destroyAll = () => {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };
  return {
    url: `nats://127.0.0.1:${address.port}`,
    cut: () => {
      cut = true;
      destroyAll();
    },
    restore: () => {
      cut = false;
    },
    /** The bytes from the server (`fromServer`), or both ways, dropped from now on; the connections stay open. */
    drop: (which: "fromServer" | "both") => {
      dropping = which;
    },
    /** No byte dropped any more, and every connection through it ended: new ones are served. */
    reset: () => {
      dropping = "none";
      destroyAll();
    },
    close: () =>
      new Promise<void>((resolve) => {
        destroyAll();
        server.close(() => resolve());
      }),
  };
};

/**
 * A TCP proxy on a random loopback port in front of `target` (a nats://
 * URL); `link` joins each client's connection to its own to the server.
 */
const linkedProxy = async (target: string, link: (client: net.Socket, upstream: net.Socket) => void) => {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    link(client, upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `nats://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
};

/**
 * A TCP proxy on a random loopback port in front of `target` (a nats://
 * URL) that passes every byte on `oneWayMs` late, in order, both ways: a
 * server that far from its clients, on one host and one clock.
 */
export const latencyProxy = (target: string, oneWayMs: number) =>
  linkedProxy(target, (client, upstream) => {
    const late = (from: net.Socket, to: net.Socket) =>
      from.on("data", (chunk) => setTimeout(() => to.destroyed || to.write(chunk), oneWayMs));
    late(client, upstream);
    late(upstream, client);
  });

/**
 * A TCP proxy on a random loopback port in front of `target` (a nats://
 * URL) whose bytes one way (`from` the server or the client) are held back
 * from each chunk `holdMs` picks (it answers the milliseconds to hold, read
 * from the chunk's text; 0 for none) until that long has passed, then
 * passed on in order with any that came meanwhile; the other way, and
 * every chunk not picked nor behind one, passes at once: one kind of
 * answer or write slow, everything else as fast as ever.
 */
export const holdingProxy = (target: string, from: "server" | "client", holdMs: (text: string) => number) =>
  linkedProxy(target, (client, upstream) => {
    const [source, sink] = from === "server" ? [upstream, client] : [client, upstream];
    if (from === "server") client.pipe(upstream);
    else upstream.pipe(client);
    let holdUntil = 0;
    let timer: NodeJS.Timeout | undefined;
    const held: Buffer[] = [];
    /** Passes on what is held once the latest hold is over. */
    const release = () => {
      const wait = holdUntil - Date.now();
      if (wait > 0) {
        timer = setTimeout(release, wait);
        return;
      }
      timer = undefined;
      for (const chunk of held.splice(0)) if (!sink.destroyed) sink.write(chunk);
    };
    source.on("data", (chunk: Buffer) => {
      holdUntil = Math.max(holdUntil, Date.now() + holdMs(chunk.toString("latin1")));
      if (held.length === 0 && Date.now() >= holdUntil) return void sink.write(chunk);
      held.push(chunk);
      timer ??= setTimeout(release, holdUntil - Date.now());
    });
    sink.on("close", () => clearTimeout(timer));
  });
