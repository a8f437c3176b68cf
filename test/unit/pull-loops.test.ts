/**
 * closeWhenEnded: a pull loop's messages close when its signal aborts or its
 * client closes, also when the signal aborted while the loop was still
 * setting its consumer up (no abort event comes then). Without that, such a
 * loop ran until the client closed, and rt.stop(), which waits for its loops
 * before it closes the client, waited its full bound (10 s) for it.
 */
import type { ConsumerMessages } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it, vi } from "vitest";
import { closeWhenEnded } from "../../src/adapters/nats/pull-loops.ts";

const fakes = () => {
  let closeClient: () => void = () => undefined;
  const nc = {
    closed: () => new Promise<void>((resolve) => (closeClient = resolve)),
  } as unknown as NatsConnection;
  const close = vi.fn(async () => undefined);
  return { nc, messages: { close } as unknown as ConsumerMessages, close, closeClient: () => closeClient() };
};

describe("closeWhenEnded", () => {
  it("closes the messages at once for a signal that aborted before the loop was set up", () => {
    const { nc, messages, close } = fakes();
    const controller = new AbortController();
    controller.abort();
    closeWhenEnded(messages, nc, controller.signal);
    expect(close).toHaveBeenCalledTimes(1);
  });

  it("closes them when the signal aborts, or when the client closes; dispose lets go of the signal", async () => {
    const a = fakes();
    const controller = new AbortController();
    closeWhenEnded(a.messages, a.nc, controller.signal);
    expect(a.close).not.toHaveBeenCalled();
    controller.abort();
    expect(a.close).toHaveBeenCalledTimes(1);

    const b = fakes();
    const kept = new AbortController();
    const stopped = closeWhenEnded(b.messages, b.nc, kept.signal);
    b.closeClient();
    await Promise.resolve();
    await Promise.resolve();
    expect(b.close).toHaveBeenCalledTimes(1);
    stopped.dispose();
    kept.abort();
    expect(b.close).toHaveBeenCalledTimes(1);
  });
});
