/**
 * Review test: a `list()` cursor into a store that came back behind it (the
 * same bucket, its last writes lost: a backup restored, a node killed before
 * it flushed them). Commit 57b5441 made a cursor name its store
 * (`v2:<seq>:<store>:<filter>`, the store tag the SHA-256 of the bucket
 * stream's creation time) so that a position that means nothing in the store
 * now read is refused instead of ending the walk short. A store that came
 * back behind keeps its creation time, so the tag matches, and the position
 * is read as before: the records written since, at sequences at or below the
 * cursor's, are never listed, and the walk ends "complete" with no error.
 * `rt.jobs.events()` handles this very case (`wentBack` in
 * adapters/nats/record-changes.ts, record-watch-store-behind.test.ts);
 * jobs-face says of `list()` "None is skipped".
 *
 * Expected: the cursor refused (`InvalidArgument` naming `cursor`), or the
 * walk going on through every job submitted after the restore. Oracle: the ids
 * submit() returned after the restore; no workers, no lane, no cleanup.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { type StoreBackup, storeBackup } from "../harness/store-backup.ts";
import { waitUntil } from "../harness/wait.ts";

describe("a list cursor into a store that came back behind it", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let backup: StoreBackup;
  beforeAll(async () => {
    server = await startNatsServer();
    backup = await storeBackup(server);
    rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      jobs: { cleanupIntervalMs: 0, lane: false },
    });
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
    await backup?.dispose();
  });

  /** A submit once the runtime is connected again (the first after a restart may fail). */
  const submitted = async (): Promise<string> => {
    let id: string | undefined;
    await waitUntil(
      async () => {
        id = (await rt.jobs.submit({ queue: "behind", tasks: [1, 2] }).catch(() => undefined))?.id;
        return id !== undefined;
      },
      { timeoutMs: 20_000, message: "a submit" },
    );
    return id as string;
  };

  /**
   * A walk's cursor taken with 33 jobs stored, the store put back to its first 3, then `since`
   * jobs submitted: the walk goes on from the cursor.
   */
  const walkAfterRestore = async (since: number): Promise<string> => {
    for (let n = 0; n < 3; n++) await submitted();
    await backup.save(); // the backup: 3 jobs
    for (let n = 0; n < 30; n++) await submitted();
    const first = await rt.jobs.list({ limit: 25 });
    expect(first.jobs).toHaveLength(25);
    const cursor = first.next as string;
    expect(cursor).toBeDefined();

    await backup.restore(); // back behind the cursor: the 3 jobs
    const fresh: string[] = [];
    for (let n = 0; n < since; n++) fresh.push(await submitted());
    // From the start, the store lists them.
    const all = (await rt.jobs.list({ limit: 1000 })).jobs.map((j) => j.id);
    expect(fresh.filter((id) => all.includes(id))).toHaveLength(since);

    let outcome: string;
    const listed = new Set<string>();
    try {
      let next: string | undefined = cursor;
      for (let pages = 0; next !== undefined && pages < 50; pages++) {
        const page = await rt.jobs.list({ limit: 25, cursor: next });
        for (const job of page.jobs) listed.add(job.id);
        next = page.next;
      }
      outcome = `listed ${fresh.filter((id) => listed.has(id)).length} of the ${fresh.length} jobs submitted since`;
    } catch (error) {
      const { _tag, field } = error as { _tag?: string; field?: string };
      outcome = `refused: ${_tag} ${field}`;
    }
    return outcome;
  };

  it("the walk's next page lists the jobs written since, or is refused", { timeout: 90_000 }, async () => {
    // Got: "listed 0 of the 10 jobs submitted since" (the same store tag; their sequences are below the cursor's).
    expect(await walkAfterRestore(10)).toMatch(
      /^(refused: InvalidArgument cursor|listed 10 of the 10 jobs submitted since)$/,
    );
  });

  it("the same once the store has grown past the cursor: another entry at its position", {
    timeout: 90_000,
  }, async () => {
    // The store's end past the cursor's position again, with another record stored there: only
    // that entry tells the store went back (the cursor names the entry it ended at).
    expect(await walkAfterRestore(40)).toMatch(
      /^(refused: InvalidArgument cursor|listed 40 of the 40 jobs submitted since)$/,
    );
  });
});
