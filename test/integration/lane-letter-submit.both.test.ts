import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { useHttpBench } from "../harness/http-bench.ts";
import {
  memoryRawLaneTask,
  memoryRawLetters,
  natsRawLaneTask,
  natsRawLetters,
  type RawLetter,
} from "../harness/raw-letters.ts";
import { memoryRawResults, natsRawResults, type RawResult } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

/**
 * A 1-task lane job's task is its commit point, and every letter and dead
 * answer of it names the submit that published it (`"s"`): a letter or an
 * answer of a rolled-back submit's late task never counts for the next
 * submit of the key. Here, each writer that is not a native worker: the
 * dead-letter processor (its letter and dead answer), the processor giving
 * up on a letter the store refuses (its dead answer alone), and an HTTP
 * worker (its letter). The oracle: the task message, the letters and the
 * results as the server stores them, read raw (a connection of the test's
 * own on NATS, the memory server's logs on memory).
 */

const names = brokerNames("jetstate");
const TOKEN = "token-lane-letters-0123456789";
const BOUND_MS = 15_000;

describe.each(["memory", "nats"] as const)(
  "a lane task's letters name its submit on the %s broker",
  (kind) => {
    const bench = useHttpBench(kind, { tokens: { [TOKEN]: "lane-letters" } });

    const rawLetters = async (queue: string, jobId: string): Promise<RawLetter[]> =>
      bench.nc ? natsRawLetters(bench.nc, queue, jobId) : memoryRawLetters(bench.memory!, queue, jobId);
    const rawResults = async (queue: string, jobId: string): Promise<RawResult[]> =>
      bench.nc ? natsRawResults(bench.nc, queue, jobId) : memoryRawResults(bench.memory!, queue, jobId);
    /** The submit the job's stored task message names: what each letter and dead answer of it must name. */
    const storedSubmit = async (queue: string, jobId: string) => {
      const body = bench.nc
        ? await natsRawLaneTask(bench.nc, queue, jobId)
        : memoryRawLaneTask(bench.memory!, queue, jobId);
      expect(body.s).toMatch(/./);
      return body.s;
    };

    /** A 1-task lane job, and the submit its stored task names. */
    const submitLaneJob = async (queue: string, payload: string) => {
      const job = await bench.rt.jobs.submit({ queue, tasks: [payload] });
      const submit = await storedSubmit(queue, job.id);
      return { job, submit };
    };
    /** Nobody answers the queue's lane tasks: each delivery is given back, five times, until it dies. */
    const nakTheLane = (queue: string) => {
      const stop = new AbortController();
      void partsOf(bench.rt).broker.consumeLane(queue, 1, (lease) => lease.nak(), stop.signal);
      return () => stop.abort();
    };

    it("the dead-letter processor's letter and dead answer of a task nobody answered name its submit", async () => {
      const queue = "letter_advisory";
      const { job, submit } = await submitLaneJob(queue, "p");
      const stop = nakTheLane(queue);
      try {
        expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
      } finally {
        stop();
      }
      expect((await rawLetters(queue, job.id)).map((l) => [l.index, l.source, l.submit])).toEqual([
        [0, "advisory", submit],
      ]);
      expect((await rawResults(queue, job.id)).map((e) => [e.i, e.dead, e.s])).toEqual([[0, true, submit]]);
    });

    /** From now on the dead-letter store refuses a letter of a 2 KB task; undone by the function returned. */
    const refuseLetters = async () => {
      if (bench.memory) {
        const state = memoryServerState(bench.memory) as { maxPayload: number };
        const was = state.maxPayload;
        state.maxPayload = 1024;
        return async () => {
          state.maxPayload = was;
        };
      }
      const jsm = await jetstreamManager(bench.nc!);
      const info = await jsm.streams.info(names.deadStream);
      await jsm.streams.update(names.deadStream, { ...info.config, max_msg_size: 64 });
      return async () => {
        await jsm.streams.update(names.deadStream, info.config);
      };
    };

    it("the dead-letter processor, its letter refused, stores the dead answer alone, naming the task's submit", async () => {
      const queue = "letter_given_up";
      const { job, submit } = await submitLaneJob(queue, "y".repeat(2048));
      const undo = await refuseLetters();
      const stop = nakTheLane(queue);
      try {
        expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
      } finally {
        stop();
        await undo();
      }
      expect(await rawLetters(queue, job.id)).toEqual([]);
      const stored = await rawResults(queue, job.id);
      expect(stored.map((e) => [e.i, e.dead, e.s])).toEqual([[0, true, submit]]);
      expect(stored[0]).toMatchObject({ e: expect.stringMatching(/dead letter not stored/) });
    });

    const post = async (path: string, body: unknown) => {
      const response = await fetch(`${bench.http.baseUrl}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      // biome-ignore lint/suspicious/noExplicitAny: the API's JSON, read field by field
      return { status: response.status, json: (await response.json()) as any };
    };

    it("an HTTP worker's letter of a task that failed its last delivery names its submit", async () => {
      const queue = "letter_http";
      const job = await bench.rt.jobs.submit({ queue, tasks: ["h"], backoff: [0] });
      const submit = await storedSubmit(queue, job.id);
      // The worker fails each delivery it is handed: the fifth stores the letter.
      const statuses: string[] = [];
      await waitUntil(
        async () => {
          const reserved = await post(`/queues/${queue}/tasks`, { batch_size: 1 });
          expect(reserved.status).toBe(200);
          for (const task of reserved.json.tasks as Array<{ receipt: string }>) {
            const answered = await post(`/jobs/${job.id}/results`, {
              results: [{ receipt: task.receipt, error: { message: "upstream down" } }],
            });
            statuses.push(answered.json.results[0].status);
          }
          return statuses.includes("dead");
        },
        { timeoutMs: BOUND_MS, intervalMs: 10, message: () => `the task to die (${statuses.join(", ")})` },
      );
      expect(statuses).toEqual(["retry", "retry", "retry", "retry", "dead"]);
      expect(await job.done()).toMatchObject({ status: "failed", dead: 1 });
      expect((await rawLetters(queue, job.id)).map((l) => [l.index, l.source, l.submit])).toEqual([
        [0, "worker", submit],
      ]);
      expect((await rawResults(queue, job.id)).map((e) => [e.i, e.dead, e.s])).toEqual([[0, true, submit]]);
    });
  },
);
