/**
 * A submit asks for its job's supervision lease beside the record's create
 * (one round trip less per job), and waits for it before the commit: no
 * task is published while the lease is still being written, and a lease that
 * fails rolls the submit back with nothing published. Read back from the
 * memory server through a broker of its own, not through the runtime.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  type MemoryServer,
} from "../../src/adapters/memory/memory-broker.ts";
import type { SupervisionLeases } from "../../src/adapters/supervision-leases.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

/** A memory broker whose `leases.acquire` waits for `answer` (`asked` resolves when it is called). */
const leaseGatedBroker = (server: MemoryServer) => {
  const inner = createMemoryBroker({ server });
  let answer!: (outcome: { error?: Error }) => void;
  const answered = new Promise<{ error?: Error }>((resolve) => (answer = resolve));
  let ask!: (jobId: string) => void;
  const asked = new Promise<string>((resolve) => (ask = resolve));
  // Methods bound to their object: the memory adapters keep their state in private fields.
  const bound = (target: object, key: string | symbol) => {
    const value = Reflect.get(target, key);
    return typeof value === "function" ? value.bind(target) : value;
  };
  const leases = new Proxy(inner.leases, {
    get(target, key) {
      const value = bound(target, key);
      if (key !== "acquire") return value;
      return async (jobId: string, ...rest: unknown[]) => {
        ask(jobId);
        const { error } = await answered;
        if (error) throw error;
        return value(jobId, ...rest);
      };
    },
  }) as SupervisionLeases;
  const broker = new Proxy(inner, {
    get: (target, key) => (key === "leases" ? leases : bound(target, key)),
  }) as Broker;
  return { broker, asked, answer };
};

describe("a submit's lease, asked for beside its record", () => {
  it.each([false, true])(
    "lane %s: the record is created while the lease is pending, no task before it",
    async (lane) => {
      const server = createMemoryServer();
      const { broker, asked, answer } = leaseGatedBroker(server);
      const rt = await createRuntime({ broker, logger: silentLogger(), jobs: { lane } });
      const reader = createMemoryBroker({ server });
      try {
        const submitted = rt.jobs.submit({ queue: "q", tasks: [1] });
        const jobId = await asked;
        // Not waiting for the lease: the record's create goes out beside it.
        for (let k = 0; k < 50 && !(await reader.getRecord(jobId)); k++)
          await new Promise((resolve) => setTimeout(resolve, 2));
        expect((await reader.getRecord(jobId))?.record.phase).toBe("submitting");
        await new Promise((resolve) => setTimeout(resolve, 20));
        const submitId = (await reader.getRecord(jobId))?.record.submitId ?? "";
        const ref = lane
          ? { id: jobId, queue: "q", submitId, lane: true as const }
          : { id: jobId, queue: "q", submitId };
        expect(await reader.tasksCommitted(ref)).toBe(false);
        answer({});
        const job = await submitted;
        expect(job.id).toBe(jobId);
        // A lane job's commit is its stored task: its record says so with the job's next write.
        expect((await reader.getRecord(jobId))?.record.phase).toBe(lane ? "submitting" : "committed");
        expect(await reader.tasksCommitted(ref)).toBe(true);
        expect(await reader.leases.list()).toEqual([expect.objectContaining({ jobId })]);
      } finally {
        answer({}); // a failed check must not leave the submit (and so the stop) waiting
        await rt.stop();
        server.close();
      }
    },
  );

  it("a lease that fails: the submit rejects, its record is rolled back, nothing published", async () => {
    const server = createMemoryServer();
    const { broker, asked, answer } = leaseGatedBroker(server);
    const rt = await createRuntime({ broker, logger: silentLogger() });
    const reader = createMemoryBroker({ server });
    try {
      const submitted = rt.jobs.submit({ queue: "q", tasks: [1, 2] }).then(
        () => undefined,
        (error: unknown) => error,
      );
      const jobId = await asked;
      answer({ error: new Error("leases bucket refused the write") });
      const error = await submitted;
      expect(error).toMatchObject({ message: expect.stringContaining("leases bucket refused the write") });
      expect((await reader.getRecord(jobId))?.record.phase).toBe("rolledBack");
      const submitId = (await reader.getRecord(jobId))?.record.submitId ?? "";
      expect(await reader.tasksCommitted({ id: jobId, queue: "q", submitId })).toBe(false);
    } finally {
      answer({}); // a failed check must not leave the submit (and so the stop) waiting
      await rt.stop();
      server.close();
    }
  });

  it("a lease that fails while the record's create is still out: the submit rejects typed, nothing unhandled", async () => {
    const server = createMemoryServer();
    const { broker: leaseGated, asked, answer } = leaseGatedBroker(server);
    let createRecord!: () => void;
    const recordGate = new Promise<void>((resolve) => (createRecord = resolve));
    const broker = new Proxy(leaseGated, {
      get(target, key) {
        const value = Reflect.get(target, key);
        if (key !== "createRecord" || typeof value !== "function") return value;
        return async (...args: unknown[]) => {
          await recordGate;
          return value(...args);
        };
      },
    }) as Broker;
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    const rt = await createRuntime({ broker, logger: silentLogger() });
    try {
      const submitted = rt.jobs.submit({ queue: "q", tasks: [1] }).then(
        () => undefined,
        (error: unknown) => error,
      );
      await asked;
      answer({ error: new Error("leases bucket refused the write") });
      // The lease's failure is settled while the record's create still waits.
      await new Promise((resolve) => setTimeout(resolve, 20));
      createRecord();
      expect(await submitted).toMatchObject({ message: expect.stringContaining("leases bucket refused") });
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
      answer({});
      createRecord();
      await rt.stop();
      server.close();
    }
  });
});
