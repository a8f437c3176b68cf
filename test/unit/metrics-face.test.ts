/**
 * `createMetrics`'s face, on the memory broker: options checked as
 * `createHttpApi`'s are (unknown keys and bad values are `InvalidArgument`
 * naming the field), the Fetch handler's routes, a user's registry shared with
 * their own metrics, and `stop()` leaving that registry as it found it. The
 * oracle is the exposition text, parsed by the test's own parser.
 */
import { Counter, Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMetrics } from "../../src/api/metrics.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { familiesOf, parseExposition, sampleValue } from "../harness/exposition.ts";

describe("createMetrics", () => {
  let rt: Runtime;
  beforeAll(async () => {
    rt = await createTestRuntime();
  });
  afterAll(async () => {
    await rt?.stop();
  });

  it("refuses unknown keys and bad values with InvalidArgument naming the field", () => {
    const bad: Array<[unknown, string]> = [
      [{ registy: new Registry() }, "registy"],
      [{ registry: {} }, "registry"],
      [{ queues: "detect" }, "queues"],
      [{ queues: ["a.b"] }, "queues[0]"],
      [{ scrapeTimeoutMs: 50 }, "scrapeTimeoutMs"],
      [{ scrapeTimeoutMs: 1.5 }, "scrapeTimeoutMs"],
      [null, "options"],
    ];
    for (const [options, field] of bad) {
      let thrown: unknown;
      try {
        createMetrics(rt, options as never);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, JSON.stringify(options)).toBeInstanceOf(InvalidArgument);
      expect((thrown as InvalidArgument).field).toBe(field);
    }
    expect(() => createMetrics({} as Runtime)).toThrow(InvalidArgument);
  });

  it("serves GET and HEAD /metrics only; registers into the user's registry beside their metrics, and stop() takes its own out", async () => {
    const registry = new Registry();
    const mine = new Counter({ name: "app_things_total", help: "the app's own", registers: [registry] });
    mine.inc(3);
    const metrics = createMetrics(rt, { registry, queues: ["face"] });
    expect(() => createMetrics(rt, { registry })).toThrow(InvalidArgument);
    expect(metrics.registry).toBe(registry);
    const get = await metrics.fetch(new Request("http://x/metrics"));
    expect(get.status).toBe(200);
    const text = await get.text();
    const samples = parseExposition(text);
    expect(sampleValue(samples, "app_things_total")).toBe(3);
    expect(sampleValue(samples, "jetstate_queue_waiting_tasks", { queue: "face" })).toBe(0);
    expect(familiesOf(text).get("jetstate_task_duration_seconds")).toBe("histogram");
    // The memory broker has no connection: no connection series.
    expect(familiesOf(text).has("jetstate_connection_state")).toBe(false);
    const head = await metrics.fetch(new Request("http://x/metrics", { method: "HEAD" }));
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    expect((await metrics.fetch(new Request("http://x/metrics", { method: "POST" }))).status).toBe(405);
    expect((await metrics.fetch(new Request("http://x/other"))).status).toBe(404);
    await metrics.stop();
    const after = familiesOf(await registry.metrics());
    expect([...after.keys()]).toEqual(["app_things_total"]);
    // Stopped: a second set registers into the same registry again.
    const again = createMetrics(rt, { registry });
    await again.stop();
  });
});
