/**
 * On NATS: two submits of one idempotency key from one host whose clock is
 * two minutes ahead of the server's, by runtimes that neither reap nor take
 * over (they never list the leases, so they never read the server's clock).
 * The first is slow between its record's create and its publish (3 s of its
 * 30 s window); the second, made meanwhile, waits on it and answers with
 * its job. `commitDeadlineBy` with no reading takes the waiter's clock for
 * the server's: the live first submit reads as stuck a minute past its
 * deadline at once (before, judged by its own stamps, the same clock's, it
 * was waited for). Found by a review of the commit deadline across clocks.
 * Oracles: the submits' outcomes, the tasks the handler ran.
 */
import { expect, it } from "vitest";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { natsClockBackend, offsetBy } from "../harness/clock-backends.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const served = useServerConnection();

// The first submit on the waiter's host (two minutes ahead too: one clock), or on a host whose
// clock is right: judged as written, its deadline two minutes behind the waiter's clock, the
// waiter gave up at once ("stuck in submit"); it reads the server's clock first now.
it.each([
  { host: "the same host", firstAheadMs: 120_000 },
  { host: "a host whose clock is right", firstAheadMs: 0 },
])(
  "a submit from a host two minutes ahead waiting on a live submit of its key on $host answers with its job",
  async ({ firstAheadMs }) => {
    const backend = natsClockBackend(served.server, served.nc);
    try {
      const queue = "q";
      const ran: number[] = [];
      const w = await backend.runtime("w", { roles: ["worker"] });
      w.workers.start({
        queue,
        handler: (task) => {
          ran.push(task.payload as number);
          return null;
        },
      });
      const ahead = offsetBy(120_000);
      let created = () => {};
      const recordCreated = new Promise<void>((resolve) => {
        created = resolve;
      });
      const first = await backend.submitter("first", {
        clock: offsetBy(firstAheadMs),
        hooks: {
          afterStep: async (at) => {
            if (at !== SubmitStep.recordCreated) return;
            created();
            await delay(3000);
          },
        },
      });
      const second = await backend.submitter("second", { clock: ahead, hooks: {} });
      const request = { queue, tasks: [1, 2], idempotencyKey: "k", lane: false };
      const answer = (p: Promise<{ id: string }>) =>
        p.then(
          (job) => `job ${job.id}`,
          (error: unknown) => String(error),
        );
      const one = answer(first.registry.submit(request));
      await recordCreated;
      const two = answer(second.registry.submit(request));
      const [a, b] = await Promise.all([one, two]);
      expect(a).toMatch(/^job /);
      expect(b).toBe(a);
      await waitUntil(() => ran.length >= 2, { timeoutMs: 10_000, message: "the tasks ran" });
      expect([...ran].sort()).toEqual([1, 2]);
    } finally {
      await backend.stop();
    }
  },
  60_000,
);
