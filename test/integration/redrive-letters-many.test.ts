/**
 * A redrive's last step removes its dead letters: one round trip after
 * another (erased) inside one operation of the default deadline, those of a
 * redrive of ~11,000 tasks failed after its tasks were published (a review;
 * here 6,000 at a 1 s deadline). The oracle: the letters listed by another
 * client of the same server.
 */
import { expect, it } from "vitest";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { newRecord } from "../contract/contract-helpers.ts";
import { startNatsServer } from "../harness/nats-server.ts";

it("thousands of a job's dead letters are removed past the operation's deadline", async () => {
  const server = await startNatsServer();
  const core = await createRuntimeCore({
    servers: server.url,
    logger: silentLogger(),
    connection: { operationTimeoutMs: 1000 },
  });
  const setupCore = await createRuntimeCore({ servers: server.url, logger: silentLogger() });
  const setup = createNatsBroker(setupCore, { retentionMs: 3600_000, holder: "letters-setup" });
  const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "letters-many" });
  try {
    const record = newRecord(6000, 30_000);
    await setup.createRecord(record);
    for (let start = 0; start < record.total; start += 500) {
      await Promise.all(
        Array.from({ length: 500 }, (_, k) =>
          setup.storeDeadLetter(
            {
              queue: record.queue,
              jobId: record.id,
              index: start + k,
              payload: start + k,
              error: "boom",
              deliveries: 1,
              at: Date.now(),
              source: "worker",
            },
            `dead.${record.id}.${start + k}`,
          ),
        ),
      );
    }
    const letters = await setup.listDeadLetters(record.queue, record.id);
    expect(letters).toHaveLength(6000);
    await broker.removeDeadLetters(letters.map((l) => l.seq));
    expect(await setup.listDeadLetters(record.queue, record.id)).toHaveLength(0);
  } finally {
    await broker.close();
    await setup.close();
    await core.stop();
    await setupCore.stop();
    await server.dispose();
  }
}, 120_000);
