/**
 * `takenBack` (src/api/redrive-results.ts): which tasks a redrive's own
 * marker took back, read from the job's results stream, must be what the
 * job counts (`countAnswers`, kernel/job-progress.ts): the redrive lowers the
 * record's dead count by them. A dead answer stored after a marker that sent
 * its letter back is taken back as it lands, never counted: a later
 * redrive's marker finds no death of it to take back. Oracles: results
 * messages written here to a memory server, and the counts worked out by
 * hand.
 */
import { describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { takenBack } from "../../src/api/redrive-results.ts";
import type { RuntimeCore } from "../../src/api/runtime-core.ts";
import { countAnswers, type JobProgress, type ResultEntry } from "../../src/kernel/job-progress.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { LinkedControllers } from "../../src/kernel/signals.ts";

const total = 3;

describe("takenBack", () => {
  it("a death taken back as it landed is no redrive's: a later marker of its letter takes back nothing", async () => {
    const server = createMemoryServer();
    const broker = createMemoryBroker({ server });
    const stop = new AbortController();
    const core = {
      options: { connection: { operationTimeoutMs: 5000 } },
      stopLinks: new LinkedControllers(stop.signal),
      stopping: stop.signal,
    } as unknown as RuntimeCore;
    const record = { id: "j1", queue: "q", total } as JobRecord;
    // Redrive x read task 0's letter 10 before its death was stored; y read letters 10 and 11.
    const stream: ResultEntry[][] = [
      [{ i: 0, redrive: true, id: "x", l: [10] }],
      [
        { i: 0, ok: false, dead: true, l: 10 },
        { i: 1, ok: false, dead: true, l: 11 },
        { i: 2, ok: false, dead: true, l: 12 },
      ],
      [
        { i: 0, redrive: true, id: "y", l: [10] },
        { i: 1, redrive: true, id: "y", l: [11] },
      ],
    ];
    try {
      for (const [n, entries] of stream.entries())
        await broker.publishResults("q", "j1", JSON.stringify(entries), `m${n}`);
      // As the job counts them: task 2 dead; 0 and 1 waiting for the copies.
      const counted = countAnswers(
        {
          total,
          answered: new Uint8Array(1),
          deadBits: new Uint8Array(1),
        } satisfies Pick<JobProgress, "total" | "answered" | "deadBits">,
        stream.flat(),
      );
      expect(counted).toMatchObject({ done: 0, failed: 0, dead: 1 });
      expect([...counted.answered]).toEqual([0b100]);
      // y took back task 1's death only; x took back none (task 0's was never counted).
      expect(await takenBack(core, broker, record, "y", [0, 1])).toEqual([1]);
      expect(await takenBack(core, broker, record, "x", [0])).toEqual([]);
    } finally {
      stop.abort();
      await broker.close?.();
      server.close();
    }
  });
});
