/**
 * runOperation: wait for the connection, run, retry transient failures with
 * the policy, fail permanent ones at once, and turn a passed deadline into
 * the error of the phase it interrupted. The oracle is a ledger kept by the
 * fake port and the fake operation: how often each was called, with what,
 * and when.
 */
import { describe, expect, it, vi } from "vitest";
import type { RetryPolicy } from "../../src/effects/retry.ts";
import { OperationsInFlight, runOperationPromise } from "../../src/effects/run-operation.ts";
import {
  type BrokerError,
  ConnectionUnavailable,
  OperationTimeout,
  PermanentBrokerError,
  RuntimeStopped,
  TransientBrokerError,
} from "../../src/kernel/errors.ts";

const transient = (n: number) => new TransientBrokerError({ message: `blip ${n}`, operation: "op" });
const permanent = new PermanentBrokerError({ message: "refused", operation: "op" });

/** Classifies by passing tagged errors through and wrapping anything else, and records each call. */
const classifier = () => {
  const calls: { error: unknown; operation: string }[] = [];
  const classify = (error: unknown, operation: string): BrokerError | RuntimeStopped => {
    calls.push({ error, operation });
    if (error instanceof TransientBrokerError || error instanceof PermanentBrokerError) return error;
    return new PermanentBrokerError({ message: String(error), operation });
  };
  return { classify, calls };
};

const connectedPort = (client = "client") => {
  const signals: AbortSignal[] = [];
  return {
    signals,
    whenConnected: async (signal: AbortSignal) => {
      signals.push(signal);
      return client;
    },
  };
};

const never = <T>(signal: AbortSignal, aborted: AbortSignal[]): Promise<T> =>
  new Promise<T>(() => {
    signal.addEventListener("abort", () => aborted.push(signal));
  });

const rejection = async (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${String(value)}`);
    },
    (error: unknown) => error,
  );

const fast = { attempts: 3, initialDelayMs: 1 };

describe("runOperation", () => {
  it("runs the operation once on the connected client and returns its value", async () => {
    const { classify, calls } = classifier();
    const seen: string[] = [];
    const value = await runOperationPromise(
      connectedPort("c1"),
      async (client, signal) => {
        seen.push(client);
        expect(signal).toBeInstanceOf(AbortSignal);
        return 42;
      },
      classify,
      { name: "kv.get", timeoutMs: 5_000, retry: fast },
    );
    expect(value).toBe(42);
    expect(seen).toEqual(["c1"]);
    expect(calls).toEqual([]);
  });

  it("retries a transient failure until an attempt succeeds, waiting again each time", async () => {
    const { classify, calls } = classifier();
    const port = connectedPort();
    let n = 0;
    const value = await runOperationPromise(
      port,
      async () => {
        n++;
        if (n < 3) throw transient(n);
        return "stored";
      },
      classify,
      { name: "publish", timeoutMs: 5_000, retry: fast },
    );
    expect(value).toBe("stored");
    expect(n).toBe(3);
    expect(port.signals).toHaveLength(3);
    expect(calls.map((c) => c.operation)).toEqual(["publish", "publish"]);
  });

  it("with maxDelayMs, the pauses between attempts double up to it and stay there", async () => {
    vi.useFakeTimers({ now: 0 });
    try {
      const { classify } = classifier();
      const at: number[] = [];
      const result = runOperationPromise(
        connectedPort(),
        async () => {
          at.push(Date.now());
          if (at.length < 6) throw transient(at.length);
          return "stored";
        },
        classify,
        { name: "publish", timeoutMs: 10_000, retry: { attempts: 10, initialDelayMs: 20, maxDelayMs: 50 } },
      );
      await vi.advanceTimersByTimeAsync(1_000);
      expect(await result).toBe("stored");
      // 20, 40, then 50 each time (uncapped: 80, 160, 320).
      expect(at).toEqual([0, 20, 60, 110, 160, 210]);
    } finally {
      vi.useRealTimers();
    }
  });

  it("gives up after `attempts` calls in all with the last transient error", async () => {
    const { classify } = classifier();
    let n = 0;
    const error = await rejection(
      runOperationPromise(
        connectedPort(),
        async () => {
          n++;
          throw transient(n);
        },
        classify,
        { name: "publish", timeoutMs: 5_000, retry: { attempts: 4, initialDelayMs: 1 } },
      ),
    );
    expect(n).toBe(4);
    expect(error).toBeInstanceOf(TransientBrokerError);
    expect((error as TransientBrokerError).message).toBe("blip 4");
  });

  it("attempts: 1 and attempts: 0 both mean one call, no retry", async () => {
    for (const attempts of [1, 0]) {
      const { classify } = classifier();
      let n = 0;
      const error = await rejection(
        runOperationPromise(
          connectedPort(),
          async () => {
            n++;
            throw transient(n);
          },
          classify,
          { name: "publish", timeoutMs: 5_000, retry: { attempts, initialDelayMs: 1 } },
        ),
      );
      expect(n).toBe(1);
      expect(error).toBeInstanceOf(TransientBrokerError);
    }
  });

  it("pauses between attempts grow from initialDelayMs, doubling", async () => {
    const { classify } = classifier();
    const at: number[] = [];
    await rejection(
      runOperationPromise(
        connectedPort(),
        async () => {
          at.push(performance.now());
          throw transient(at.length);
        },
        classify,
        { name: "publish", timeoutMs: 5_000, retry: { attempts: 3, initialDelayMs: 40 } },
      ),
    );
    expect(at).toHaveLength(3);
    // Timers never fire early; 1 ms of slack for timer rounding.
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(39);
    expect(at[2]! - at[1]!).toBeGreaterThanOrEqual(79);
  });

  it("fails a permanent error at once, classified under the operation's name", async () => {
    const { classify, calls } = classifier();
    let n = 0;
    const raw = new Error("no such stream");
    const error = await rejection(
      runOperationPromise(
        connectedPort(),
        async () => {
          n++;
          throw raw;
        },
        classify,
        { name: "streams.info", timeoutMs: 5_000, retry: fast },
      ),
    );
    expect(n).toBe(1);
    expect(calls).toEqual([{ error: raw, operation: "streams.info" }]);
    expect(error).toBeInstanceOf(PermanentBrokerError);
    expect((error as PermanentBrokerError).operation).toBe("streams.info");
  });

  it("a RuntimeStopped from the wait is passed on as it is; other wait errors are classified", async () => {
    const { classify, calls } = classifier();
    const stopped = new RuntimeStopped({ message: "stopping" });
    const error = await rejection(
      runOperationPromise(
        { whenConnected: async () => Promise.reject(stopped) },
        async () => "never",
        classify,
        { name: "kv.put", timeoutMs: 5_000, retry: fast },
      ),
    );
    expect(error).toBe(stopped);
    expect(calls).toEqual([]);

    const odd = new Error("port broke");
    const classified = await rejection(
      runOperationPromise({ whenConnected: async () => Promise.reject(odd) }, async () => "never", classify, {
        name: "kv.put",
        timeoutMs: 5_000,
        retry: fast,
      }),
    );
    expect(calls).toEqual([{ error: odd, operation: "kv.put (waiting for connection)" }]);
    expect((classified as PermanentBrokerError).operation).toBe("kv.put (waiting for connection)");
  });

  it("no connection before the deadline: ConnectionUnavailable, and the wait is told to stop", async () => {
    const { classify } = classifier();
    const aborted: AbortSignal[] = [];
    let ran = false;
    const error = await rejection(
      runOperationPromise(
        { whenConnected: (signal) => never<string>(signal, aborted) },
        async () => {
          ran = true;
        },
        classify,
        { name: "kv.create", timeoutMs: 30, retry: fast },
      ),
    );
    expect(ran).toBe(false);
    expect(error).toBeInstanceOf(ConnectionUnavailable);
    expect((error as ConnectionUnavailable).message).toBe("kv.create: no NATS connection within 30 ms");
    expect(aborted).toHaveLength(1);
  });

  it("an operation that does not answer before the deadline: OperationTimeout (outcome unknown)", async () => {
    const { classify } = classifier();
    const aborted: AbortSignal[] = [];
    const error = await rejection(
      runOperationPromise(connectedPort(), (_client, signal) => never<string>(signal, aborted), classify, {
        name: "publish",
        timeoutMs: 30,
        retry: fast,
      }),
    );
    expect(error).toBeInstanceOf(OperationTimeout);
    const timeout = error as OperationTimeout;
    expect(timeout.message).toBe("publish: no answer within 30 ms (outcome unknown)");
    expect(timeout.operation).toBe("publish");
    expect(timeout.timeoutMs).toBe(30);
    expect(aborted).toHaveLength(1);
  });

  it("the deadline counts from the start: a retry that waits for a lost connection ends as ConnectionUnavailable", async () => {
    const { classify } = classifier();
    const aborted: AbortSignal[] = [];
    let waits = 0;
    const port = {
      whenConnected: (signal: AbortSignal) => {
        waits++;
        // Connected for the first attempt; the connection is gone for the retry.
        return waits === 1 ? Promise.resolve("client") : never<string>(signal, aborted);
      },
    };
    const error = await rejection(
      runOperationPromise(
        port,
        async () => {
          throw transient(1);
        },
        classify,
        { name: "publish", timeoutMs: 60, retry: { attempts: 5, initialDelayMs: 1 } },
      ),
    );
    expect(waits).toBe(2);
    expect(error).toBeInstanceOf(ConnectionUnavailable);
  });

  it("an aborted signal rejects with RuntimeStopped naming the operation", async () => {
    const { classify } = classifier();
    const controller = new AbortController();
    const aborted: AbortSignal[] = [];
    const pending = runOperationPromise(
      connectedPort(),
      (_client, signal) => {
        queueMicrotask(() => controller.abort());
        return never<string>(signal, aborted);
      },
      classify,
      { name: "kv.watch", timeoutMs: 5_000, retry: fast, signal: controller.signal },
    );
    const error = await rejection(pending);
    expect(error).toBeInstanceOf(RuntimeStopped);
    expect((error as RuntimeStopped).message).toBe("kv.watch: aborted");
  });

  it("with a signal that was not aborted, a tagged failure is rejected as it is", async () => {
    const { classify } = classifier();
    const controller = new AbortController();
    const error = await rejection(
      runOperationPromise(
        connectedPort(),
        async () => {
          throw permanent;
        },
        classify,
        { name: "op", timeoutMs: 5_000, retry: fast, signal: controller.signal },
      ),
    );
    expect(error).toBe(permanent);
  });

  it("a classifier that throws: its error comes out as it is, not disguised as a stop", async () => {
    const bug = new Error("classifier bug");
    const error = await rejection(
      runOperationPromise(
        connectedPort(),
        async () => {
          throw new Error("refused");
        },
        () => {
          throw bug;
        },
        { name: "op", timeoutMs: 5_000, retry: fast, signal: new AbortController().signal },
      ),
    );
    expect(error).toBe(bug);
  });
});

/**
 * The first attempt on a client already connected runs at once, outside the
 * Effect program: the same outcomes as above, and the ledger shows the port
 * was not waited on for it.
 */
describe("runOperation, first attempt on the current client", () => {
  const currentPort = (client = "now") => {
    const port = connectedPort("later");
    return { ...port, current: () => client };
  };

  it("runs on the current client without waiting for the connection", async () => {
    const { classify } = classifier();
    const port = currentPort("now");
    const seen: string[] = [];
    const value = await runOperationPromise(
      port,
      async (client) => {
        seen.push(client);
        return 7;
      },
      classify,
      { name: "kv.get", timeoutMs: 5_000, retry: fast },
    );
    expect(value).toBe(7);
    expect(seen).toEqual(["now"]);
    expect(port.signals).toEqual([]);
  });

  it("retries a transient failure through the connection, within the attempts left", async () => {
    const { classify } = classifier();
    const port = currentPort("now");
    const seen: string[] = [];
    let n = 0;
    const error = await rejection(
      runOperationPromise(
        port,
        async (client) => {
          seen.push(client);
          throw transient(++n);
        },
        classify,
        { name: "kv.get", timeoutMs: 5_000, retry: fast },
      ),
    );
    // Three attempts in all: the first at once, two more after waiting for the connection.
    expect(seen).toEqual(["now", "later", "later"]);
    expect(port.signals).toHaveLength(2);
    expect(error).toBeInstanceOf(TransientBrokerError);
    expect((error as TransientBrokerError).message).toBe("blip 3");
  });

  it("fails a permanent failure at once, typed, and retries nothing with one attempt", async () => {
    const { classify } = classifier();
    const port = currentPort();
    let calls = 0;
    /** The operation `name` whose every attempt throws `error`, as it ends. */
    const failing = (name: string, error: unknown, retry: RetryPolicy) =>
      rejection(
        runOperationPromise(
          port,
          async () => {
            calls++;
            throw error;
          },
          classify,
          { name, timeoutMs: 5_000, retry },
        ),
      );
    expect(await failing("kv.get", permanent, fast)).toBe(permanent);
    expect(await failing("fetch", transient(1), { attempts: 1, initialDelayMs: 0 })).toBeInstanceOf(
      TransientBrokerError,
    );
    expect(calls).toBe(2);
    expect(port.signals).toEqual([]);
  });

  it("turns its deadline into OperationTimeout, and an aborted signal into RuntimeStopped", async () => {
    const { classify } = classifier();
    const aborted: AbortSignal[] = [];
    const timedOut = await rejection(
      runOperationPromise(currentPort(), (_c, s) => never(s, aborted), classify, {
        name: "kv.get",
        timeoutMs: 20,
        retry: fast,
      }),
    );
    expect(timedOut).toBeInstanceOf(OperationTimeout);
    const stop = new AbortController();
    const stopped = runOperationPromise(
      currentPort(),
      async () => {
        stop.abort();
        throw transient(1);
      },
      classify,
      { name: "kv.get", timeoutMs: 5_000, retry: fast, signal: stop.signal },
    );
    expect(await rejection(stopped)).toBeInstanceOf(RuntimeStopped);
  });
});

describe("runOperation, calls in flight (what the runtime's stop waits for)", () => {
  /** A call of the operation that settles only when the test says. */
  const held = () => {
    let settle: (ok: boolean) => void = () => undefined;
    const running = new Promise<string>((resolve, reject) => {
      settle = (ok) => (ok ? resolve("late") : reject(transient(9)));
    });
    return { running, settle: (ok: boolean) => settle(ok) };
  };

  it("counts an attempt of the retries let go of at the abort until it settles", async () => {
    const inFlight = new OperationsInFlight();
    const controller = new AbortController();
    const second = held();
    let calls = 0;
    const op = () => (++calls === 1 ? Promise.reject(transient(1)) : second.running);
    const current = { ...connectedPort("now"), current: () => "now" };
    const result = rejection(
      runOperationPromise(current, op, classifier().classify, {
        name: "op",
        timeoutMs: 5000,
        retry: fast,
        signal: controller.signal,
        inFlight,
      }),
    );
    await vi.waitFor(() => expect(calls).toBe(2));
    controller.abort();
    // The operation rejected at the abort; its attempt still runs, and is counted.
    expect(await result).toBeInstanceOf(RuntimeStopped);
    expect(inFlight.count).toBe(1);
    let idle = false;
    void inFlight.idle().then(() => {
      idle = true;
    });
    second.settle(false);
    await vi.waitFor(() => expect(idle).toBe(true));
    expect(inFlight.count).toBe(0);
  });

  it("counts a first attempt past its deadline until it settles", async () => {
    const inFlight = new OperationsInFlight();
    const first = held();
    const current = { ...connectedPort("now"), current: () => "now" };
    const result = rejection(
      runOperationPromise(current, () => first.running, classifier().classify, {
        name: "op",
        timeoutMs: 20,
        retry: fast,
        inFlight,
      }),
    );
    expect(await result).toBeInstanceOf(OperationTimeout);
    expect(inFlight.count).toBe(1);
    first.settle(true);
    await inFlight.idle();
    expect(inFlight.count).toBe(0);
  });
});
