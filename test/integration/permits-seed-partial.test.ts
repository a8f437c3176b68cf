/**
 * A seed of a lost pool (`seedLostPermits`) that stored some of its N
 * permits and not the rest, its runtime then stopped: every later count
 * found permits on the pool's subject, said "kept", and published nothing;
 * the pool stayed short (1 of 2) until the next `configure()`. Now a count
 * that finds fewer than the record's N, all of one publishing of the
 * record's round, publishes the missing ones under their ids. The oracle:
 * the permits stream's count on the pool's subject, read by the test's own
 * client, and whether a second permit is ever taken.
 */
import { describe, expect, it } from "vitest";
import type { Permit, QueueControls } from "../../src/adapters/queue-controls.ts";
import { type ControlsHandles, lostRequest, useControlsReplicas } from "../harness/controls-replicas.ts";

/** The permits' lease: a permit held through the test without keeps (the default 5 s would hand it out again). */
const leaseMs = 60_000;

describe("a seed that stored part of its permits, its runtime stopped", () => {
  const { replica: replicaOf, face, permitsOf, deletePermitsStream } = useControlsReplicas("seed-partial");
  /** A replica whose publishes `lose` names by id are lost (never sent), `left` of them. */
  const replica = (lose?: { readonly id: RegExp; left: number }) =>
    replicaOf((handles: ControlsHandles) => {
      const js = new Proxy(handles.js, {
        get(j, k) {
          const v = Reflect.get(j, k, j);
          if (k !== "publish" || typeof v !== "function") return typeof v === "function" ? v.bind(j) : v;
          return (subject: string, body: unknown, opts?: { msgID?: string }) => {
            if (lose && lose.left > 0 && opts?.msgID && lose.id.test(opts.msgID)) {
              lose.left--;
              return Promise.reject(lostRequest());
            }
            return v.call(j, subject, body, opts);
          };
        },
      });
      return { ...handles, js };
    });
  /** Takes of `controls` until one gives a permit or `untilMs` passes (a failed take tried again, as the gate does). */
  const takeWithin = async (controls: QueueControls, queue: string, untilMs: number) => {
    const started = Date.now();
    const failures: string[] = [];
    while (Date.now() - started < untilMs) {
      const permit = await controls
        .takePermit(queue, "concurrency", AbortSignal.timeout(4_000), leaseMs)
        .catch((error: unknown) => void failures.push(String(error)));
      if (permit) return { permit, failures };
    }
    return { permit: undefined as Permit | undefined, failures };
  };

  it("a later take's count tops the pool up to N (before: 1 of 2, for good)", async () => {
    const queue = "seed_partial";
    await face((await replica()).controls).configure(queue, { maxConcurrency: 2, permitLeaseMs: leaseMs });
    // A's seed loses the publish of its second permit (index 1 of its round's first publishing).
    const lose = { id: new RegExp(`^${queue}\\.concurrency\\.[^.]+\\.1\\.1$`), left: 1 };
    const a = await replica(lose);
    const b = await replica();
    await deletePermitsStream();
    // A's take makes the consumer and seeds: one permit stored, the other's publish lost; A stops.
    for (let tries = 0; lose.left > 0 && tries < 10; tries++)
      (
        await a.controls
          .takePermit(queue, "concurrency", AbortSignal.timeout(4_000), leaseMs)
          .catch(() => undefined)
      )?.release();
    expect(lose.left, "the seed's second publish was reached").toBe(0);
    await a.stop();
    expect(await permitsOf(queue)).toBe(1);

    // B holds the one permit; its second take's pulls give none, and its count (after 5 s) finds 1 of 2.
    const first = await takeWithin(b.controls, queue, 10_000);
    expect(first.permit, first.failures.join("; ")).toBeDefined();
    const second = await takeWithin(b.controls, queue, 20_000);
    first.permit?.release();
    second.permit?.release();
    expect(
      { second: second.permit !== undefined, permits: await permitsOf(queue) },
      second.failures.join("; "),
    ).toEqual({ second: true, permits: 2 });
  }, 60_000);
});
