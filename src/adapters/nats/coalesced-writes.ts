import type { NatsConnection } from "@nats-io/transport-node";

/**
 * One socket write per turn of the event loop, not one per turn of the
 * microtask queue. nats.js writes what it has buffered at the end of each
 * microtask checkpoint in which something was sent; a runtime busy with many
 * small jobs reaches dozens of checkpoints per loop turn (each I/O callback
 * ends in one), so its messages went out in as many writes, and each write is
 * a system call that also wakes the server. Corked until the loop's check phase
 * (`setImmediate`), they go out in one `writev`, in the order they were sent:
 * 1-task lane jobs 64 in flight made 1.37 writes a job before, 0.15 after,
 * and used ~25 µs less of system CPU a job (docs/architecture.md). The wait is the rest of the
 * current loop turn, never a timer: nothing waits for I/O while a write is
 * corked (a pending immediate keeps the poll phase from blocking).
 *
 * nats.js has no option for it: this reaches its internals (the connection's
 * `protocol`, whose `transport` is made again on every reconnect, and the
 * transport's `socket`, a `net.Socket`), both of the version bundled with
 * this package. Each is checked before it is used; where one is missing
 * (another nats.js) nothing is changed, and the writes go out as nats.js
 * sends them. `test/integration/coalesced-writes.test.ts` checks that it
 * takes hold, across a reconnect too. Returns whether it did.
 */
export const coalesceWrites = (nc: NatsConnection): boolean => {
  const protocol = (nc as unknown as { protocol?: object }).protocol;
  if (protocol === undefined || !hasTransport(protocol)) return false;
  let transport: unknown = corking(protocol.transport);
  // The protocol makes a new transport for each (re)connect: each is corked as it is set.
  Object.defineProperty(protocol, "transport", {
    configurable: true,
    enumerable: true,
    get: () => transport,
    set: (next: unknown) => {
      transport = corking(next);
    },
  });
  return true;
};

/** Whether `nc`'s current transport corks its writes (tests). */
export const writesCoalesced = (nc: NatsConnection): boolean => {
  const protocol = (nc as unknown as { protocol?: object }).protocol;
  return protocol !== undefined && hasTransport(protocol) && corked.has(protocol.transport as object);
};

interface Corkable {
  cork(): void;
  uncork(): void;
  readonly destroyed: boolean;
}

interface Transport {
  send(frame: Uint8Array): void;
  readonly socket?: unknown;
}

const corked = new WeakSet<object>();

const hasTransport = (protocol: object): protocol is { transport: unknown } => "transport" in protocol;

const isTransport = (value: unknown): value is Transport =>
  typeof value === "object" && value !== null && typeof (value as Transport).send === "function";

const isCorkable = (socket: unknown): socket is Corkable =>
  typeof socket === "object" &&
  socket !== null &&
  typeof (socket as Corkable).cork === "function" &&
  typeof (socket as Corkable).uncork === "function";

/** `transport`, its `send` corking its socket until the loop's check phase. */
const corking = (transport: unknown): unknown => {
  if (!isTransport(transport) || corked.has(transport)) return transport;
  corked.add(transport);
  const send = transport.send.bind(transport);
  let pending = false;
  transport.send = (frame: Uint8Array) => {
    // Read at each send: the transport sets its socket as it dials (and again for TLS).
    const socket = transport.socket;
    if (!pending && isCorkable(socket) && !socket.destroyed) {
      pending = true;
      socket.cork();
      setImmediate(() => {
        pending = false;
        socket.uncork();
      });
    }
    send(frame);
  };
  return transport;
};
