import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { AgentStore } from "../../src/adapters/agent-store.ts";
import { memoryAgentStore } from "../../src/adapters/memory/memory-agent-store.ts";
import {
  type AgentOptions,
  type AgentRegistry,
  createAgentRegistry,
  DEFAULT_SKIP_FOR_MS,
  type FailureOutcome,
  TargetUnavailable,
  UnknownAgent,
} from "../../src/api/agents.ts";
import { InvalidArgument, isTransient, RevisionConflict, RuntimeStopped } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

const HOUR = 60 * 60 * 1000;

/** A clock the test moves by hand, so the 2 h skip window costs nothing. */
const manualClock = (start = 1_000_000) => {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
};

const deferred = <T = void>() => {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
};

const fixedLoads =
  (loads: Record<string, number>) =>
  (target: string): number =>
    loads[target] ?? Number.POSITIVE_INFINITY;

const burst = (registry: AgentRegistry, agentId: string, target: string, n: number) =>
  Promise.all(
    Array.from({ length: n }, (_, i) =>
      registry.reportFailure(agentId, { target, error: new Error(`upstream 503 #${i}`) }),
    ),
  );

const count = (outcomes: FailureOutcome[], outcome: FailureOutcome["outcome"]) =>
  outcomes.filter((o) => o.outcome === outcome).length;

const setup = (options: { store?: AgentStore; now?: () => number } = {}) => {
  const store = memoryAgentStore();
  const registry = createAgentRegistry({ logger: silentLogger(), store: options.store ?? store, ...options });
  return { store, registry };
};

const agent = (overrides: Partial<AgentOptions> = {}): AgentOptions => ({
  agentId: "detector",
  targets: ["A", "B", "C"],
  current: "A",
  load: fixedLoads({ A: 0, B: 1, C: 2 }),
  ...overrides,
});

describe("agent lock: one switch per burst", () => {
  it("turns 100 concurrent failures of one agent into exactly one switch", async () => {
    const { store, registry } = setup();
    const switches: string[] = [];
    await registry.register(agent({ onSwitch: ({ from, to }) => void switches.push(`${from}->${to}`) }));

    const outcomes = await burst(registry, "detector", "A", 100);

    expect(count(outcomes, "switched")).toBe(1);
    expect(count(outcomes, "stale")).toBe(99);
    expect(outcomes.find((o) => o.outcome === "switched")).toEqual({
      outcome: "switched",
      from: "A",
      to: "B",
    });
    expect(switches).toEqual(["A->B"]);
    expect(store.updates()).toBe(1);
    const stored = await store.read("detector");
    expect(stored?.record).toMatchObject({ v: 1, current: "B", switches: 1 });
    expect(registry.get("detector")).toMatchObject({
      current: "B",
      switches: 1,
      exhausted: false,
      lock: "idle",
    });
    await registry.stop();
  });

  it("drops a failure observed on A that is reported after the agent moved to B", async () => {
    const { store, registry } = setup();
    await registry.register(agent());
    await expect(registry.reportFailure("detector", { target: "A" })).resolves.toMatchObject({
      outcome: "switched",
      to: "B",
    });
    const before = await store.read("detector");

    const late = await registry.reportFailure("detector", {
      target: "A",
      error: "observed before the switch",
    });

    expect(late).toEqual({ outcome: "stale", target: "A", current: "B" });
    expect(await store.read("detector")).toEqual(before);
    await registry.stop();
  });

  it("finds a failure stale when another process switched first (its local view was still A)", async () => {
    const store = memoryAgentStore();
    const here = createAgentRegistry({ logger: silentLogger(), store });
    const there = createAgentRegistry({ logger: silentLogger(), store });
    await here.register(agent());
    await there.register(agent());
    await there.reportFailure("detector", { target: "A" });
    expect(here.get("detector")?.current).toBe("A");

    await expect(here.reportFailure("detector", { target: "A" })).resolves.toMatchObject({
      outcome: "stale",
    });
    expect(here.get("detector")?.current).toBe("B");
    expect(store.updates()).toBe(1);
    await Promise.all([here.stop(), there.stop()]);
  });

  it("re-reads after a lost compare-and-set and then finds the failure stale", async () => {
    const base = memoryAgentStore();
    let raced = false;
    // Another writer switches the record to C between our read and our write.
    const racing: AgentStore = {
      ...base,
      update: async (agentId, record, revision) => {
        if (!raced) {
          raced = true;
          const theirs = await base.read(agentId);
          await base.update(agentId, { ...theirs!.record, current: "C", switches: 1 }, theirs!.revision);
        }
        return base.update(agentId, record, revision);
      },
    };
    const { registry } = setup({ store: racing });
    const switches: string[] = [];
    await registry.register(agent({ onSwitch: ({ to }) => void switches.push(to) }));

    await expect(registry.reportFailure("detector", { target: "A" })).resolves.toMatchObject({
      outcome: "stale",
      current: "C",
    });
    expect(switches).toEqual([]);
    expect((await base.read("detector"))?.record).toMatchObject({ current: "C", switches: 1 });
    await registry.stop();
  });
});

describe("agent lock: no cascade and the skip window", () => {
  it("switches once per burst, never back to A within the window, and A returns after it", async () => {
    const clock = manualClock();
    const { registry } = setup({ now: clock.now });
    const path: string[] = [];
    // A is the least loaded of all, so only the skip list keeps the agent away from it.
    await registry.register(agent({ onSwitch: ({ to }) => void path.push(to) }));

    await burst(registry, "detector", "A", 50);
    clock.advance(10 * 60 * 1000);
    const second = await burst(registry, "detector", "B", 50);

    expect(count(second, "switched")).toBe(1);
    expect(path).toEqual(["B", "C"]);
    const state = registry.get("detector")!;
    expect(state.current).toBe("C");
    expect(state.skips.map((s) => s.target).sort()).toEqual(["A", "B"]);

    // Still inside A's window (and B's): nowhere to go, stay on C and say so.
    clock.advance(DEFAULT_SKIP_FOR_MS - 10 * 60 * 1000 - 1);
    const third = await burst(registry, "detector", "C", 20);
    expect(count(third, "exhausted")).toBe(20);
    expect(registry.get("detector")).toMatchObject({ current: "C", exhausted: true });
    expect(path).toEqual(["B", "C"]);

    // One millisecond later A's skip has expired: it is eligible (and least loaded) again.
    clock.advance(1);
    const fourth = await burst(registry, "detector", "C", 20);
    expect(count(fourth, "switched")).toBe(1);
    expect(path).toEqual(["B", "C", "A"]);
    expect(registry.get("detector")).toMatchObject({ current: "A", exhausted: false, switches: 3 });
    await registry.stop();
  });

  it("honours a custom skipForMs", async () => {
    const clock = manualClock();
    const { registry } = setup({ now: clock.now });
    await registry.register(agent({ targets: ["A", "B"], skipForMs: HOUR }));
    await registry.reportFailure("detector", { target: "A" });
    expect(registry.get("detector")?.skips).toEqual([{ target: "A", until: clock.now() + HOUR }]);
    clock.advance(HOUR);
    await expect(registry.reportFailure("detector", { target: "B" })).resolves.toMatchObject({ to: "A" });
    await registry.stop();
  });

  it("stays when every alternative is failing, writes that once, and reports it in the state", async () => {
    const { store, registry } = setup();
    const load = (target: string) => {
      if (target === "B") throw new Error("probe timed out");
      return target === "C" ? Number.NaN : 0;
    };
    await registry.register(agent({ load }));

    const outcomes = await burst(registry, "detector", "A", 30);

    expect(count(outcomes, "exhausted")).toBe(30);
    expect(store.updates()).toBe(1);
    expect(registry.get("detector")).toMatchObject({ current: "A", exhausted: true, switches: 0 });
    await registry.stop();
  });
});

describe("agent lock: distinct agents", () => {
  it("switches each agent once, and a slow onSwitch of one does not delay the other", async () => {
    const { registry } = setup();
    const slowHook = deferred();
    const slowEntered = deferred();
    await registry.register(
      agent({
        agentId: "slow",
        onSwitch: async () => {
          slowEntered.resolve();
          await slowHook.promise;
        },
      }),
    );
    await registry.register(agent({ agentId: "fast" }));

    const slowBurst = burst(registry, "slow", "A", 40);
    await slowEntered.promise;
    const fastOutcomes = await burst(registry, "fast", "A", 40);

    // The fast agent finished its whole burst while the slow one still holds its lock.
    expect(count(fastOutcomes, "switched")).toBe(1);
    expect(registry.get("slow")).toMatchObject({ lock: "notifying", queued: 39 });
    slowHook.resolve();
    expect(count(await slowBurst, "switched")).toBe(1);
    expect(registry.get("slow")?.current).toBe("B");
    expect(registry.get("fast")?.current).toBe("B");
    await registry.stop();
  });
});

describe("agent lock: bad input leaves the state unchanged", () => {
  it("rejects a failure of an unknown agent with UnknownAgent", async () => {
    const { registry } = setup();
    const error = await registry.reportFailure("nobody", { target: "A" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnknownAgent);
    expect(error).toMatchObject({ _tag: "UnknownAgent", agentId: "nobody" });
    expect(registry.get("nobody")).toBeUndefined();
  });

  it("rejects a target that is not in the agent's list", async () => {
    const { store, registry } = setup();
    await registry.register(agent());
    const before = registry.get("detector");

    const error = await registry.reportFailure("detector", { target: "Z" }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(InvalidArgument);
    expect(error).toMatchObject({ field: "target" });
    expect(registry.get("detector")).toEqual(before);
    expect(store.updates()).toBe(0);
    await registry.stop();
  });

  it.each<[string, Partial<AgentOptions>, string]>([
    ["an empty target list", { targets: [] }, "targets"],
    ["a current target not in the list", { current: "Z" }, "current"],
    ["duplicate targets", { targets: ["A", "B", "A"] }, "targets"],
    ["an empty agent id", { agentId: "" }, "agentId"],
    ["a negative skip window", { skipForMs: -1 }, "skipForMs"],
  ])("refuses to register %s", async (_, overrides, field) => {
    const { store, registry } = setup();
    const error = await registry.register(agent(overrides)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArgument);
    expect(error).toMatchObject({ _tag: "InvalidArgument", field });
    expect(registry.get(overrides.agentId ?? "detector")).toBeUndefined();
    expect(await store.read("detector")).toBeUndefined();
  });

  it("refuses a duplicate registration, concurrent or later, and keeps the first", async () => {
    const { registry } = setup();
    const [first, concurrent] = await Promise.allSettled([
      registry.register(agent()),
      registry.register(agent({ targets: ["B", "C"], current: "B" })),
    ]);
    expect(first.status).toBe("fulfilled");
    expect(concurrent).toMatchObject({
      status: "rejected",
      reason: { _tag: "InvalidArgument", field: "agentId" },
    });
    await expect(registry.register(agent({ current: "C" }))).rejects.toBeInstanceOf(InvalidArgument);
    expect(registry.get("detector")).toMatchObject({ current: "A", targets: ["A", "B", "C"] });
    await registry.stop();
  });
});

describe("agent lock: the rest of the contract", () => {
  it("adopts the stored target when another process registered and switched first", async () => {
    const store = memoryAgentStore();
    const first = createAgentRegistry({ logger: silentLogger(), store });
    await first.register(agent());
    await first.reportFailure("detector", { target: "A" });
    const second = createAgentRegistry({ logger: silentLogger(), store });
    await expect(second.register(agent())).resolves.toMatchObject({ current: "B", switches: 1 });
    await Promise.all([first.stop(), second.stop()]);
  });

  it("keeps the switch when onSwitch throws, and logs it", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: "debug" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const registry = createAgentRegistry({ logger, store: memoryAgentStore() });
    await registry.register(
      agent({
        onSwitch: () => {
          throw new Error("restart failed");
        },
      }),
    );

    const outcomes = await burst(registry, "detector", "A", 3);

    expect(count(outcomes, "switched")).toBe(1);
    expect(registry.get("detector")?.current).toBe("B");
    const mine = lines.filter((l) => l.actor === "agent-lock" && l.agentId === "detector");
    expect(mine.filter((l) => l.msg === "onSwitch failed; the switch stands")).toHaveLength(1);
    expect(mine.filter((l) => l.msg === "stale failure dropped")).toHaveLength(2);
    expect(mine.filter((l) => l.msg === "agent switched target")).toHaveLength(1);
    expect(mine.some((l) => l.msg === "agent-lock state" && l.state === "notifying")).toBe(true);
    await registry.stop();
  });

  it("rejects queued failures with RuntimeStopped on stop, leaving nothing held in the store", async () => {
    const base = memoryAgentStore();
    // A process that dies mid-switch: its write never completes.
    const hanging: AgentStore = { ...base, update: () => new Promise<number>(() => {}) };
    const dying = createAgentRegistry({ logger: silentLogger(), store: hanging });
    await dying.register(agent());
    const pending = burst(dying, "detector", "A", 5);
    await expect.poll(() => dying.get("detector")?.lock).toBe("writing");
    await dying.stop();
    await expect(pending).rejects.toBeInstanceOf(RuntimeStopped);

    const survivor = createAgentRegistry({ logger: silentLogger(), store: base });
    await survivor.register(agent());
    await expect(survivor.reportFailure("detector", { target: "A" })).resolves.toMatchObject({ to: "B" });
    await survivor.stop();
  });

  it("gives up with the conflict after too many lost compare-and-sets", async () => {
    const base = memoryAgentStore();
    const hot: AgentStore = {
      ...base,
      update: async (agentId) => {
        throw new RevisionConflict({ key: agentId, message: "always beaten" });
      },
    };
    const { registry } = setup({ store: hot });
    await registry.register(agent());
    await expect(registry.reportFailure("detector", { target: "A" })).rejects.toBeInstanceOf(
      RevisionConflict,
    );
    expect(registry.get("detector")).toMatchObject({ current: "A", lock: "idle" });
    await registry.stop();
  });

  it("TargetUnavailable is a transient tagged error naming agent and target", () => {
    const error = new TargetUnavailable({ agentId: "detector", target: "A", message: "A answered 503" });
    expect(error._tag).toBe("TargetUnavailable");
    expect(error.retry).toBe("transient");
    expect(isTransient(error)).toBe(true);
    expect(error).toMatchObject({ agentId: "detector", target: "A", message: "A answered 503" });
  });
});
