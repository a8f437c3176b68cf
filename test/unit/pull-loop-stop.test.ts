/**
 * How a stopping worker's task loop lets go (adapters/nats/pull-loops.ts),
 * against a stand-in of nats.js's consume loop: the drain takes the loop's
 * subscription over, so nats.js's close cannot forget it, and hands back
 * each task that reaches it, released after 3.5 s, or passes it to its
 * worker (which runs it if it is the task's last delivery).
 */
import type { ConsumerMessages } from "@nats-io/jetstream";
import { describe, expect, it, vi } from "vitest";
import { LateLaneLease, LateTaskLease } from "../../src/adapters/nats/late-leases.ts";
import { drainOnStop, fromClosedLoop } from "../../src/adapters/nats/pull-loops.ts";
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

  it("passes a task that reaches it to its worker, and ends only once the worker has taken it", async () => {
    const loop = standIn();
    const taken: string[] = [];
    let take = () => {};
    const drained = drainOnStop(loop.messages, silentLogger(), "c", (msg) => {
      taken.push(msg.reply ?? "");
      return new Promise<void>((resolve) => {
        take = resolve;
      });
    });
    let ended = false;
    void drained.then(() => {
      ended = true;
    });
    loop.deliver();
    loop.deliver("$JS.ACK.s.c.1.7.7.0.3");
    await new Promise((resolve) => setTimeout(resolve, 10));
    // Not answered by the drain: its worker decides.
    expect(loop.calls).toEqual(["drain"]);
    expect(taken).toEqual(["$JS.ACK.s.c.1.7.7.0.3"]);
    expect(ended).toBe(false);
    take();
    await drained;
  });
  it("hands back what comes after the drain is over: its worker no longer waits for it", async () => {
    const loop = standIn();
    const taken: string[] = [];
    await drainOnStop(loop.messages, silentLogger(), "c", (msg) => {
      taken.push(msg.reply ?? "");
    });
    loop.deliver("$JS.ACK.s.c.1.8.8.0.2");
    expect(taken).toEqual([]);
    expect(loop.calls).toEqual(["drain", `respond $JS.ACK.s.c.1.8.8.0.2 -NAK {"delay":3500000000}`]);
  });
});

/** A stand-in of the broker's republish for the leases that never put back. */
const noRepublish = () => Promise.reject(new Error("not put back here"));
/** A consumer life not over: its answers are sent. */
const alive = { over: false };

describe("a task that reached a drained loop", () => {
  const late = (reply: string, subject = "q.tasks.j1") => {
    const answers: string[] = [];
    const msg = {
      reply,
      subject,
      data: new TextEncoder().encode('{"i":3,"p":1}'),
      respond: (data: string) => answers.push(data),
    };
    return { msg: msg as never, answers };
  };

  it("reads its delivery count and sequence from its ack subject, both layouts", () => {
    const old = new LateTaskLease(late("$JS.ACK.s.c.5.42.9.1796000000000000000.3").msg, noRepublish, alive);
    expect([old.deliveryCount, old.seq, old.body]).toEqual([5, 42, '{"i":3,"p":1}']);
    const newer = new LateTaskLease(
      late("$JS.ACK.dom.hash.s.c.2.17.9.1796000000000000000.3.tok").msg,
      noRepublish,
      alive,
    );
    expect([newer.deliveryCount, newer.seq]).toEqual([2, 17]);
    expect(
      new LateLaneLease(late("$JS.ACK.s.c.1.7.7.0.3", "pfx.lane.q.jab12").msg, noRepublish, alive).jobId,
    ).toBe("jab12");
  });

  it("answers as nats.js's message does; a release is not redelivered within 3.5 s of the catch; settled once", () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      /** The answers to `settle`, made `laterMs` after the task was caught. */
      const answersOf = (settle: (lease: LateTaskLease) => void, laterMs = 0) => {
        const { msg, answers } = late("$JS.ACK.s.c.1.7.7.0.3");
        const lease = new LateTaskLease(msg, noRepublish, alive);
        lease.working();
        vi.advanceTimersByTime(laterMs);
        settle(lease);
        // After it settled nothing more is sent, as nats.js's message does.
        lease.working();
        lease.ack();
        return answers;
      };
      expect(answersOf((l) => l.nak())).toEqual(["+WPI", '-NAK {"delay":3500000000}']);
      expect(answersOf((l) => l.nak(1000))).toEqual(["+WPI", '-NAK {"delay":3500000000}']);
      expect(answersOf((l) => l.nak(1000), 3000)).toEqual(["+WPI", '-NAK {"delay":1000000000}']);
      expect(answersOf((l) => l.nak(), 2000)).toEqual(["+WPI", '-NAK {"delay":1500000000}']);
      expect(answersOf((l) => l.nak(), 5000)).toEqual(["+WPI", "-NAK"]);
      expect(answersOf((l) => l.nak(4000))).toEqual(["+WPI", '-NAK {"delay":4000000000}']);
      expect(answersOf((l) => l.handBack())).toEqual(["+WPI", '-NAK {"delay":3500000000}']);
      expect(answersOf((l) => l.handBack(5000))).toEqual(["+WPI", '-NAK {"delay":5000000000}']);
      expect(answersOf((l) => l.term())).toEqual(["+WPI", "+TERM"]);
      expect(answersOf((l) => l.ack())).toEqual(["+WPI", "+ACK"]);
      // Its consumer's life over (made again under its name): its lease is kept, nothing else sent.
      const { msg, answers } = late("$JS.ACK.s.c.1.7.7.0.3");
      const over = new LateTaskLease(msg, noRepublish, { over: true });
      for (const answer of [() => over.nak(), () => over.term(), () => over.ack(), () => over.working()])
        answer();
      expect(answers).toEqual(["+WPI"]);
    } finally {
      vi.useRealTimers();
    }
  });

  it("is put back once its loop's pull requests are gone, its lease kept meanwhile; acked once the copy is stored", async () => {
    vi.useFakeTimers({ toFake: ["Date", "setTimeout", "setInterval", "clearInterval"] });
    try {
      const { msg, answers } = late("$JS.ACK.s.c.1.7.7.0.3");
      const copies: string[] = [];
      const lease = new LateTaskLease(
        msg,
        async (subject, data, msgId) => {
          copies.push(`${subject} ${new TextDecoder().decode(data)} ${msgId} at ${answers.length} answers`);
        },
        alive,
      );
      vi.advanceTimersByTime(500);
      const put = lease.putBack(1000);
      await vi.advanceTimersByTimeAsync(2_900);
      // 3.5 s from the catch: not stored yet, the lease extended at once and every second.
      expect(copies).toEqual([]);
      expect(answers).toEqual(["+WPI", "+WPI", "+WPI"]);
      await vi.advanceTimersByTimeAsync(200);
      expect(await put).toBe(true);
      expect(copies).toEqual(['q.tasks.j1 {"i":3,"p":1} back.7 at 4 answers']);
      expect(answers).toEqual(["+WPI", "+WPI", "+WPI", "+WPI", "+ACK"]);
      await vi.advanceTimersByTimeAsync(5_000);
      expect(answers).toHaveLength(5);

      const failed = late("$JS.ACK.s.c.1.8.8.0.3");
      const notStored = new LateTaskLease(failed.msg, noRepublish, alive).putBack(1000);
      const settled = notStored.then(
        () => "stored",
        (error: Error) => error.message,
      );
      await vi.advanceTimersByTimeAsync(4_000);
      // Not acked: left to its lease, which is no longer extended.
      expect(await settled).toBe("not put back here");
      expect(failed.answers.filter((a) => a !== "+WPI")).toEqual([]);
      await vi.advanceTimersByTimeAsync(5_000);
      expect(failed.answers).toHaveLength(4);

      // Its job ended during the wait: no copy, and the original is left to that end.
      const ended = late("$JS.ACK.s.c.1.9.9.0.3");
      let over = false;
      const unwanted = new LateTaskLease(ended.msg, noRepublish, alive).putBack(1000, () => !over);
      over = true;
      await vi.advanceTimersByTimeAsync(4_000);
      expect(await unwanted).toBe(false);
      expect(ended.answers.filter((a) => a !== "+WPI")).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });

  it("a task of a loop that let go of its buffer is not redelivered within 3.5 s of the close", () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      const delays: Array<number | undefined> = [];
      const msg = fromClosedLoop({ nak: (millis?: number) => void delays.push(millis) });
      msg.nak();
      msg.nak(5000);
      vi.advanceTimersByTime(3000);
      msg.nak(100);
      vi.advanceTimersByTime(1000);
      msg.nak(100);
      expect(delays).toEqual([3500, 5000, 500, 100]);
    } finally {
      vi.useRealTimers();
    }
  });
});
