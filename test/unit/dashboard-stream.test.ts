/**
 * A dashboard stream whose client stopped reading is closed, not buffered
 * without end: the oracle is the bytes the test's `run` emitted and the
 * signal it was handed (aborted by the stream, never by the test).
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { eventStream, maxQueuedBytes } from "../../src/adapters/http/dashboard-stream.ts";
import { waitUntil } from "../harness/wait.ts";

const log = pino({ level: "silent" });

describe("a dashboard event stream", () => {
  it("ends its run once a client that reads nothing has more than its cap queued", async () => {
    let emitted = 0;
    let handed: AbortSignal | undefined;
    let returned = false;
    let running: Promise<void> | undefined;
    // The stopped run returns only when the test lets it: its read below comes first on any machine.
    let letReturn = () => {};
    const released = new Promise<void>((resolve) => {
      letReturn = resolve;
    });
    const payload = "x".repeat(1000);
    const res = eventStream(
      new AbortController().signal,
      log,
      async (emit, signal) => {
        handed = signal;
        // Emits as a busy job would, yielding between bursts, until the stream stops it (or 8 MiB).
        while (!signal.aborted && emitted < 8 * maxQueuedBytes) {
          for (let n = 0; n < 64; n++) {
            emit("job", { payload });
            emitted += payload.length;
          }
          await new Promise((resolve) => setImmediate(resolve));
        }
        // Slow to return once stopped, as a run awaiting a read is: the queue is not kept meanwhile.
        await released;
        returned = true;
      },
      (r) => {
        running = r;
      },
    );
    try {
      expect(res.status).toBe(200);
      await waitUntil(() => handed?.aborted === true || emitted >= 8 * maxQueuedBytes, {
        timeoutMs: 5000,
        message: "the run ended",
      });
      expect(handed?.aborted).toBe(true);
      expect(emitted).toBeLessThan(2 * maxQueuedBytes);
      // The queue is dropped before the run returns: a late reader gets an error, not megabytes.
      await expect(res.body!.getReader().read()).rejects.toThrow(/stopped reading/);
      expect(returned).toBe(false);
    } finally {
      letReturn();
    }
    await running;
    expect(returned).toBe(true);
  });

  it("keeps a stream whose client reads", async () => {
    const ac = new AbortController();
    let handed: AbortSignal | undefined;
    let emitted = 0;
    const res = eventStream(ac.signal, log, async (emit, signal) => {
      handed = signal;
      while (!signal.aborted && emitted < 4 * maxQueuedBytes) {
        emit("job", { payload: "y".repeat(1000) });
        emitted += 1000;
        await new Promise((resolve) => setImmediate(resolve));
      }
    });
    const reader = res.body!.getReader();
    let read = 0;
    while (emitted < 4 * maxQueuedBytes) {
      const { value, done } = await reader.read();
      if (done) break;
      read += value.length;
    }
    expect(handed?.aborted).toBe(false);
    expect(read).toBeGreaterThan(3 * maxQueuedBytes);
    ac.abort();
  });
});
