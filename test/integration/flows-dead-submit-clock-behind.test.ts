/**
 * On NATS: a flow's node submit that died after its record's create (its
 * runtime killed), on a host whose clock is ten minutes behind the
 * server's, with no admin runtime (no reaper). The flow is driven on by
 * another runtime of that host with the `submitter` role alone: it never
 * lists the leases, so it never reads the server's clock. Its sweep finishes
 * a dead node submit once past its commit deadline and the grace (here 1
 * s), then submits the node again. `commitDeadlineBy` with no reading takes
 * the driver's clock for the server's: the server's stamp + 30 s is ten
 * minutes on by the driver's clock, and the flow waits ten minutes (before,
 * judged by its own stamps, the same clock's, it went on ~31 s on). Found by
 * a review of the commit deadline across clocks. Oracles: the flow's
 * outcome, the tasks the handler ran, the test's clock.
 */
import { expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { offsetBy } from "../harness/clock-backends.ts";
import { submitAndDieOnNats } from "../harness/flows-dying-submitter.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { delay } from "../harness/wait.ts";

const served = useServerConnection();

it("a dead node submit on a host ten minutes behind is finished by the flow's next driver about 31 s on, not ten minutes", async () => {
  const behind = offsetBy(-600_000);
  // The dying runtime: its job submit dies once its record is written, its driver with it.
  const deadAt = await submitAndDieOnNats(
    served.server.url,
    SubmitStep.recordCreated,
    { id: "f1", jobs: { b: { queue: "q", tasks: ["b0", "b1"], lane: false } } },
    { clock: behind },
  );

  const ran: string[] = [];
  const w = await createRuntime({
    servers: served.server.url,
    name: "w",
    roles: ["worker"],
    logger: silentLogger(),
  });
  w.workers.start({
    queue: "q",
    handler: (task) => {
      ran.push(String(task.payload));
      return 1;
    },
  });
  const s = await createRuntime({
    servers: served.server.url,
    name: "s",
    roles: ["submitter"],
    logger: silentLogger(),
    clock: behind,
    jobs: { reapGraceMs: 1000 },
  });
  try {
    const flow = await s.flows.get("f1");
    const outcome = await Promise.race([
      (flow as NonNullable<typeof flow>).done().then(
        () => "done",
        (e: unknown) => `failed: ${String(e)}`,
      ),
      delay(60_000).then(() => "not done 60 s on"),
    ]);
    expect({ outcome, ran: [...ran].sort() }).toEqual({ outcome: "done", ran: ["b0", "b1"] });
    // Not before its window: the dead submit is finished past it.
    expect(Date.now() - deadAt).toBeGreaterThanOrEqual(30_000);
  } finally {
    await s.stop();
    await w.stop();
  }
}, 120_000);
