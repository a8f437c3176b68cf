/**
 * How a stopping worker's task loop lets go (adapters/nats/pull-loops.ts),
 * against a stand-in of nats.js's consume loop: the drain takes the loop's
 * subscription over, so nats.js's close cannot forget it, and hands back
 * each task that reaches it, released after 3.5 s.
 */
import type { ConsumerMessages } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { drainOnStop } from "../../src/adapters/nats/pull-loops.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

/** nats.js's loop as the drain sees it: its `sub`, with the calls made on it written down. */
const standIn = () => {
  const calls: string[] = [];
  const sub = {
    callback: (_error: unknown, _msg: unknown) => calls.push("nats.js callback"),
    unsubscribe: () => calls.push("unsubscribe"),
    drain: () => {
      calls.push("drain");
      return Promise.resolve();
    },
  };
  const messages = { sub, close: () => sub.unsubscribe() } as unknown as ConsumerMessages;
  /** What the server sends the loop's inbox: a task (with its ack subject) or a status (none). */
  const deliver = (reply?: string) =>
    sub.callback(undefined, {
      reply,
      respond: (data: string) => {
        calls.push(`respond ${reply} ${data}`);
        return true;
      },
    });
  return { calls, sub, messages, deliver };
};

describe("a stopping worker's task loop", () => {
  it("is drained: nats.js's close no longer forgets it, and a task that still comes is handed back", () => {
    const loop = standIn();
    drainOnStop(loop.messages, silentLogger(), "c");
    // What nats.js's `close()` does next: unsubscribe, which would drop what is on its way.
    (loop.messages as unknown as { close: () => void }).close();
    loop.deliver(); // a status: a request's end, a heartbeat
    loop.deliver("$JS.ACK.s.c.1.7.7.0.3");
    expect(loop.calls).toEqual(["drain", `respond $JS.ACK.s.c.1.7.7.0.3 -NAK {"delay":3500000000}`]);
  });

  it("closes as nats.js does when its loop is not the shape it knows", () => {
    const messages = { close: () => undefined } as unknown as ConsumerMessages;
    expect(() => drainOnStop(messages, silentLogger(), "c")).not.toThrow();
  });
});
