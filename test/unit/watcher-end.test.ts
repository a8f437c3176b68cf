/**
 * A runtime that only watches a job (no lease) waits for its end in the
 * record once it has counted every answer. When the record it reads there
 * holds another end than its own count says (a cancel from a third runtime
 * landed before the supervisor's end), that end is the job's: the watcher
 * ended as it had counted, and its done() said "succeeded" of a job the
 * store says was cancelled. The watcher here hears no record change
 * through its watch (stubbed), so its read is the only way it learns; the
 * oracle is the record as the store holds it.
 */
import { describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil, within } from "../harness/wait.ts";

describe("a watcher's end", () => {
  it("is the end the record holds when the watcher reads another than it counted", async () => {
    const server = createMemoryServer();
    const jobs = { leaseMs: 30_000, reapIntervalMs: 0, cleanupIntervalMs: 0 };
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The supervisor's end write waits: a cancel lands first.
    const a = spiedBroker(createMemoryBroker({ server, holder: "a" }), (key, _n, args, call) =>
      key === "updateRecord" && (args[0] as { status?: string }).status === "succeeded"
        ? released.then(call)
        : call(),
    );
    // The watcher's record watch is placed and tells nothing.
    const w = spiedBroker(createMemoryBroker({ server, holder: "w" }), (key, _n, args, call) => {
      if (key !== "watchRecordChanges") return call();
      const [, signal, onWatching] = args as [
        unknown,
        AbortSignal,
        ((restarted: boolean) => void) | undefined,
      ];
      onWatching?.(false);
      return new Promise<void>((resolve) =>
        signal.addEventListener("abort", () => resolve(), { once: true }),
      );
    });
    const runtimes: Runtime[] = [];
    const start = async (broker: ReturnType<typeof createMemoryBroker>, takeOver: boolean) => {
      const rt = await createRuntime({ broker, logger: silentLogger(), jobs: { ...jobs, takeOver } });
      runtimes.push(rt);
      return rt;
    };
    try {
      const supervisor = await start(a.broker as ReturnType<typeof createMemoryBroker>, true);
      supervisor.workers.start<number, number>({ queue: "q", handler: (task) => task.payload });
      const job = await supervisor.jobs.submit<number, number>({ queue: "q", tasks: [1, 2] });
      const watcher = await start(w.broker as ReturnType<typeof createMemoryBroker>, false);
      const watched = await watcher.jobs.get<number>(job.id);
      // Both answered and counted first: a cancel that purged a task not answered yet would leave
      // the watcher waiting for it (its watch tells it nothing), not reading the record's end.
      await waitUntil(() => watched!.snapshot().done === 2, {
        timeoutMs: 5000,
        message: "both answers counted",
      });
      const third = await start(createMemoryBroker({ server, holder: "c" }), false);
      await (await third.jobs.get(job.id))!.cancel("late");
      // Its end, or "never" when it has not ended within 5 s.
      const end = await within(watched!.done(), 5000);
      const stored = await createMemoryBroker({ server }).getRecord(job.id);
      expect(stored?.record).toMatchObject({ status: "failed", reason: "cancelled: late" });
      expect(end).toMatchObject({ status: "failed", reason: "cancelled: late" });
    } finally {
      release();
      for (const rt of runtimes.reverse()) await rt.stop();
    }
  });
});
