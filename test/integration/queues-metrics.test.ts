/**
 * `jetstate_queue_paused` from `createMetrics(rt)`, read by another runtime
 * than the one that paused (memory server shared by both), parsed from the
 * exposition text.
 */
import { describe, expect, it } from "vitest";
import { createMetrics } from "../../src/api/metrics.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { parseExposition, sampleValue } from "../harness/exposition.ts";

describe("jetstate_queue_paused", () => {
  it("is 1 for a paused queue and 0 once resumed, as another runtime set them", async () => {
    const server = createMemoryServer();
    const admin = await createTestRuntime({ broker: createMemoryBroker({ server }) });
    const reader = await createTestRuntime({ broker: createMemoryBroker({ server }) });
    const metrics = createMetrics(reader);
    try {
      const paused = async (queue: string) =>
        sampleValue(parseExposition(await metrics.metrics()), "jetstate_queue_paused", { queue });
      expect(await paused("mail")).toBeUndefined();
      await admin.queues.pause("mail");
      await admin.queues.configure("sms", { ratePerSecond: 3 });
      expect(await paused("mail")).toBe(1);
      expect(await paused("sms")).toBe(0);
      await admin.queues.resume("mail");
      expect(await paused("mail")).toBe(0);
    } finally {
      await metrics.stop();
      await reader.stop();
      await admin.stop();
      server.close();
    }
  });
});
