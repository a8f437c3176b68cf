/**
 * Review test: a `list()` cursor given back with another filter than the one
 * that made it. A cursor is only a stream position (`v1:<seq>`, kernel/list-page.ts);
 * it does not say which queue or status it was made for, so `rt.jobs.list()`
 * and `GET /jobs` take a cursor from a walk of queue `alpha` as a position in
 * a walk of queue `beta` (or of another status) and silently start after it:
 * every `beta` job stored before that position is left out, with no error, and
 * the walk "ends" having missed it. An operator UI that keeps the cursor when
 * the filter changes lists wrong data. Expected: an `InvalidArgument` naming
 * `cursor` (a 400 `invalid_request` over HTTP), as for any cursor jetstate did
 * not give for this listing. The oracle is the ledger of jobs submitted: no
 * job is written during the walk (no workers; 2-task jobs, so no lane commit
 * write comes a second later).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpApi, createRuntime, type HttpApi, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

const TOKEN = "token-list-cursor-filter-0123";

describe("a list cursor given back with another filter", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let api: HttpApi;
  /** The ledger, in the order submitted (and so stored: nothing rewrites them). */
  const submitted: { id: string; queue: string }[] = [];

  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      jobs: { cleanupIntervalMs: 0, lane: false },
    });
    api = createHttpApi(rt, { tokens: { [TOKEN]: { identity: "reader", role: "read", queues: "*" } } });
    // beta-0, alpha-0, beta-1, alpha-1, beta-2: a beta job before the first alpha one.
    for (const queue of ["beta", "alpha", "beta", "alpha", "beta"]) {
      const job = await rt.jobs.submit({ queue, tasks: [1, 2] });
      submitted.push({ id: job.id, queue });
    }
    // gamma-0 cancelled, gamma-1 running, gamma-2 cancelled, stored in that order (a cancel
    // rewrites its record, so each is cancelled before the next is submitted).
    for (const cancelled of [true, false, true]) {
      const job = await rt.jobs.submit({ queue: "gamma", tasks: [1, 2] });
      submitted.push({ id: job.id, queue: "gamma" });
      if (cancelled) await job.cancel("review test");
    }
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });

  const beta = () => submitted.filter((j) => j.queue === "beta").map((j) => j.id);
  const name = (id: string) => {
    const n = submitted.findIndex((j) => j.id === id);
    return `${submitted[n]?.queue}-${submitted.slice(0, n).filter((j) => j.queue === submitted[n]?.queue).length}`;
  };
  /** What a list call did: refused (its tag and field), or the jobs it listed, by ledger name. */
  const outcome = (call: Promise<{ jobs: { id: string }[] }>) =>
    call.then(
      (page) => ({ listed: page.jobs.map((j) => name(j.id)) }),
      (error: { _tag?: string; field?: string }) => ({ refused: `${error._tag} ${error.field}` }),
    );

  it("rt.jobs.list(): a cursor of queue alpha's walk, given with queue beta, is refused (not a silent skip)", async () => {
    const alphaPage = await rt.jobs.list({ queue: "alpha", limit: 1 });
    expect(alphaPage.jobs.map((j) => j.id)).toEqual([submitted[1]?.id]);
    expect(alphaPage.next).toBeDefined();
    // The whole beta walk from the start holds all three beta jobs: the filter itself works.
    expect((await rt.jobs.list({ queue: "beta" })).jobs.map((j) => j.id)).toEqual(beta());

    // Got: { listed: ["beta-1", "beta-2"] }, no `next`: beta-0 silently left out.
    expect(
      await outcome(rt.jobs.list({ queue: "beta", limit: 10, cursor: alphaPage.next as string })),
    ).toEqual({
      refused: "InvalidArgument cursor",
    });
  });

  it("rt.jobs.list(): a cursor of a status walk, given with another status, is refused", async () => {
    const running = await rt.jobs.list({ queue: "gamma", status: "running", limit: 1 });
    expect(running.jobs.map((j) => name(j.id))).toEqual(["gamma-1"]);
    expect(running.next).toBeDefined();
    expect(await outcome(rt.jobs.list({ queue: "gamma", status: "failed" }))).toEqual({
      listed: ["gamma-0", "gamma-2"],
    });
    // Got: { listed: ["gamma-2"] }: gamma-0, failed throughout, silently left out.
    expect(
      await outcome(rt.jobs.list({ queue: "gamma", status: "failed", cursor: running.next as string })),
    ).toEqual({ refused: "InvalidArgument cursor" });
  });

  it("GET /jobs: a cursor of queue alpha's listing, given with queue beta, is a 400 naming cursor", async () => {
    const get = async (query: string) => {
      const res = await api.fetch(
        new Request(`http://api.test/jobs${query}`, { headers: { authorization: `Bearer ${TOKEN}` } }),
      );
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    const alphaPage = await get("?queue=alpha&limit=1");
    expect(alphaPage.status).toBe(200);
    const next = alphaPage.json.next as string;
    expect(next).toBeDefined();
    // Got: 200 with beta-1 and beta-2, beta-0 missing.
    const betaPage = await get(`?queue=beta&limit=10&cursor=${next}`);
    const jobs = (betaPage.json.jobs as { id: string }[] | undefined)?.map((j) => name(j.id));
    const error = betaPage.json.error as { code?: string; field?: string } | undefined;
    expect({ status: betaPage.status, code: error?.code, field: error?.field, jobs }).toEqual({
      status: 400,
      code: "invalid_request",
      field: "cursor",
      jobs: undefined,
    });
  });
});
