/**
 * How a stopping worker's task loop lets go (adapters/nats/pull-loops.ts),
 * against a stand-in of nats.js's consume loop: the drain takes the loop's
 * subscription over, so nats.js's close cannot forget it, and hands back
 * each task that reaches it, with the delay asked; and which servers lose a
 * redelivery while only a closed loop's requests wait.
 */
import type { ConsumerMessages } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { closedPullsRunOutMs, drainOnStop, losesRedeliveries } from "../../src/adapters/nats/pull-loops.ts";
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
    drainOnStop(loop.messages, silentLogger(), "c", closedPullsRunOutMs);
    // What nats.js's `close()` does next: unsubscribe, which would drop what is on its way.
    (loop.messages as unknown as { close: () => void }).close();
    loop.deliver(); // a status: a request's end, a heartbeat
    loop.deliver("$JS.ACK.s.c.1.7.7.0.3");
    expect(loop.calls).toEqual(["drain", `respond $JS.ACK.s.c.1.7.7.0.3 -NAK {"delay":3500000000}`]);
  });

  it("hands back at once where the server loses no redelivery (delay 0)", () => {
    const loop = standIn();
    drainOnStop(loop.messages, silentLogger(), "c", 0);
    loop.deliver("$JS.ACK.s.c.1.8.8.0.2");
    expect(loop.calls).toEqual(["drain", `respond $JS.ACK.s.c.1.8.8.0.2 -NAK {"delay":0}`]);
  });

  it("closes as nats.js does when its loop is not the shape it knows", () => {
    const messages = { close: () => undefined } as unknown as ConsumerMessages;
    expect(() => drainOnStop(messages, silentLogger(), "c")).not.toThrow();
  });
});

describe("servers that lose a redelivery while only a closed loop's requests wait", () => {
  it("are those before 2.10.16, and any whose version is unknown", () => {
    expect(
      ["2.9.10", "2.10.15", "v2.10.0", "1.4.1", undefined, "", "nightly"].map(losesRedeliveries),
    ).toEqual([true, true, true, true, true, true, true]);
    expect(["2.10.16", "2.10.29", "2.11.0", "2.12.1", "3.0.0"].map(losesRedeliveries)).toEqual([
      false,
      false,
      false,
      false,
      false,
    ]);
  });
});
