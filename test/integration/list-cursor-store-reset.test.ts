/**
 * Review test: a `list()` cursor from before the server came back with an
 * empty store. A cursor is only a stream sequence (`v1:<seq>`,
 * kernel/list-page.ts); the records bucket made again counts its sequences
 * from 1, so the next page of a walk started on the lost store reads the new
 * bucket from a position that means nothing there: past its end, an empty page
 * with no `next`. The walk ends "complete" and every job of the new store is
 * missed, with no error (on `rt.jobs.list()` and on `GET /jobs`, which decode
 * the same cursor). `rt.jobs.events()` handles the same case (its cursor keeps
 * the stream's creation time and reads a bucket made again from its start);
 * the list cursor does not. Expected: the cursor refused (`InvalidArgument`
 * naming `cursor`, 400 over HTTP), or the walk going on through every job of
 * the new store. Oracle: the ids submit() returned on the new store; nothing
 * rewrites them during the walk (no workers, no lane).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpApi, createRuntime, type HttpApi, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const TOKEN = "token-list-cursor-reset-0123";

describe("a list cursor from before the store was reset", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let api: HttpApi;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      jobs: { cleanupIntervalMs: 0, lane: false },
    });
    api = createHttpApi(rt, { tokens: { [TOKEN]: { identity: "reader", role: "read", queues: "*" } } });
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });

  it("the walk's next page, on the new store, is refused or lists every job of it", async () => {
    for (let n = 0; n < 30; n++) await rt.jobs.submit({ queue: "reset", tasks: [1, 2] });
    const first = await rt.jobs.list({ limit: 25 });
    expect(first.jobs).toHaveLength(25);
    const cursor = first.next as string;
    expect(cursor).toBeDefined();

    await server.restartEmpty();
    // The ledger: the jobs of the new store (the first submit waits for the reconnect).
    const fresh: string[] = [];
    await waitUntil(
      async () => {
        const job = await rt.jobs.submit({ queue: "reset", tasks: [1, 2] }).catch(() => undefined);
        if (job) fresh.push(job.id);
        return job !== undefined;
      },
      { timeoutMs: 20_000, message: "a submit on the new store" },
    );
    while (fresh.length < 10) fresh.push((await rt.jobs.submit({ queue: "reset", tasks: [1, 2] })).id);
    // From the start, the new store lists them all.
    expect((await rt.jobs.list({ limit: 100 })).jobs.map((j) => j.id).sort()).toEqual([...fresh].sort());

    /** The walk on from `cursor`: refused (tag and field), or how many of the new jobs it listed. */
    const walkOn = async (page: (cursor: string) => Promise<{ ids: string[]; next?: string }>) => {
      const listed = new Set<string>();
      let next: string | undefined = cursor;
      try {
        for (let pages = 0; next !== undefined && pages < 50; pages++) {
          const got = await page(next);
          for (const id of got.ids) listed.add(id);
          next = got.next;
        }
      } catch (error) {
        const { _tag, field } = error as { _tag?: string; field?: string };
        return `refused: ${_tag} ${field}`;
      }
      return `listed ${fresh.filter((id) => listed.has(id)).length} of the ${fresh.length} jobs of the new store`;
    };
    const accepted = /^(refused: InvalidArgument cursor|listed 10 of the 10 jobs of the new store)$/;

    // Got: "listed 0 of the 10 jobs of the new store" (an empty page, no next).
    const viaRuntime = await walkOn(async (c) => {
      const page = await rt.jobs.list({ limit: 25, cursor: c });
      return { ids: page.jobs.map((j) => j.id), ...(page.next ? { next: page.next } : {}) };
    });
    const viaHttp = await walkOn(async (c) => {
      const res = await api.fetch(
        new Request(`http://api.test/jobs?limit=25&cursor=${c}`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        }),
      );
      const body = (await res.json()) as {
        jobs?: { id: string }[];
        next?: string;
        error?: { field?: string };
      };
      if (res.status === 400) throw { _tag: "InvalidArgument", field: body.error?.field };
      return { ids: (body.jobs ?? []).map((j) => j.id), ...(body.next ? { next: body.next } : {}) };
    });
    expect({ viaRuntime, viaHttp }).toEqual({
      viaRuntime: expect.stringMatching(accepted),
      viaHttp: expect.stringMatching(accepted),
    });
  });
});
