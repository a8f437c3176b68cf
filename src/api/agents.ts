import { type Actor, createActor, fromPromise } from "xstate";
import type { AgentStore } from "../adapters/agent-store.ts";
import {
  type AgentRecord,
  initialAgentRecord,
  type SkipEntry,
  type SwitchSummary,
} from "../kernel/agent-record.ts";
import { activeSkips, decide, describeFailure, eligibleTargets, isStale } from "../kernel/choose-target.ts";
import { InvalidArgument, RevisionConflict, RuntimeStopped, UnknownAgent } from "../kernel/errors.ts";
import { childLogger, type Logger } from "../kernel/logger.ts";
import type { AgentInfo } from "../kernel/presence.ts";
import { AgentId, check, checkOr, Label, number, rejectUnknownKeys } from "../kernel/validation.ts";
import {
  type AgentLockState,
  agentLockMachine,
  type EvaluateInput,
  type FailureOutcome,
} from "../machines/agent-lock.machine.ts";

export { TargetUnavailable, UnknownAgent } from "../kernel/errors.ts";
export type { FailureOutcome } from "../machines/agent-lock.machine.ts";

/** Two hours: long enough for a provider outage to clear, short enough to come back on its own. */
export const DEFAULT_SKIP_FOR_MS = 2 * 60 * 60 * 1000;
const MAX_REGISTER_ATTEMPTS = 5;

export interface SwitchNotice {
  readonly agentId: string;
  readonly from: string;
  readonly to: string;
  readonly reason: string;
  /** Aborted when the registry stops while the hook runs. */
  readonly signal: AbortSignal;
}

export interface AgentOptions {
  readonly agentId: string;
  readonly targets: readonly string[];
  /** The initial target; a record already in the store wins if it names a listed target. */
  readonly current: string;
  /** Lower is better; throwing or a non-finite value marks the target as failing. */
  readonly load?: (target: string) => number | Promise<number>;
  readonly skipForMs?: number;
  /** Runs under the agent's lock, once per switch, in the process that won it. */
  readonly onSwitch?: (notice: SwitchNotice) => void | Promise<void>;
}

export interface FailureReport {
  /** The target the failure was observed on, not the agent's target now. */
  readonly target: string;
  readonly error?: unknown;
}

export interface AgentState {
  readonly agentId: string;
  readonly targets: readonly string[];
  readonly current: string;
  /** Skips still in force now. */
  readonly skips: readonly SkipEntry[];
  readonly switches: number;
  readonly lastSwitch: SwitchSummary | undefined;
  /** The current target failed and no alternative was eligible. */
  readonly exhausted: boolean;
  readonly lock: AgentLockState;
  readonly queued: number;
}

export interface AgentRegistryOptions {
  readonly logger: Logger;
  readonly store: AgentStore;
  readonly now?: () => number;
}

/** `rt.agents`: agents whose upstream target switches on failure, one lock per agent. */
export interface Agents {
  register(options: AgentOptions): Promise<AgentState>;
  /** Resolves once the lock handled the failure (after the switch and its onSwitch). */
  reportFailure(agentId: string, report: FailureReport): Promise<FailureOutcome>;
  get(agentId: string): AgentState | undefined;
  subscribe(listener: (state: AgentState) => void): () => void;
  /**
   * Every agent in the store, registered in this process or another: its
   * current target, skip list and switches, as last written.
   */
  list(): Promise<AgentInfo[]>;
}

/** The agents of a runtime, which stops them with itself. */
export interface AgentRegistry extends Agents {
  stop(): Promise<void>;
}

interface Waiter {
  readonly reason: string;
  readonly resolve: (outcome: FailureOutcome) => void;
  readonly reject: (error: unknown) => void;
}

interface Agent {
  readonly options: AgentOptions;
  readonly actor: Actor<typeof agentLockMachine>;
  readonly waiters: Map<string, Waiter>;
}

const invalid = (message: string, field: string) => new InvalidArgument({ message, field });

const agentKeys = ["agentId", "targets", "current", "load", "skipForMs", "onSwitch"] as const;
const maxTargets = 1000;
const SkipForMs = number(0, Number.MAX_SAFE_INTEGER);

/** Throws `InvalidArgument` naming the first field that is wrong; ids and names by their shapes. */
const validate = (options: AgentOptions): void => {
  if (typeof options !== "object" || options === null) throw invalid("options: must be an object", "options");
  rejectUnknownKeys(options, agentKeys, "");
  check(AgentId, options.agentId, "agentId");
  const { targets } = options;
  if (!Array.isArray(targets) || targets.length === 0 || targets.length > maxTargets) {
    throw invalid(`targets: must be a list of 1–${maxTargets} target names`, "targets");
  }
  for (const [n, target] of targets.entries()) check(Label, target, `targets[${n}]`);
  if (new Set(targets).size !== targets.length) throw invalid("targets: must not repeat", "targets");
  if (!targets.includes(options.current)) throw invalid("current: must be one of the targets", "current");
  checkOr(SkipForMs, options.skipForMs, "skipForMs", undefined);
  for (const hook of ["load", "onSwitch"] as const) {
    if (options[hook] !== undefined && typeof options[hook] !== "function") {
      throw invalid(`${hook}: must be a function`, hook);
    }
  }
};

export const createAgentRegistry = (registryOptions: AgentRegistryOptions): AgentRegistry => {
  const { store, logger } = registryOptions;
  const now = registryOptions.now ?? Date.now;
  const agents = new Map<string, Agent>();
  const registering = new Set<string>();
  const listeners = new Set<(state: AgentState) => void>();
  let stopped = false;
  let failureSeq = 0;

  const stateOf = (agent: Agent): AgentState => {
    const snapshot = agent.actor.getSnapshot();
    const record = snapshot.context.record;
    return {
      agentId: agent.options.agentId,
      targets: agent.options.targets,
      current: record.current,
      skips: activeSkips(record.skips, now()),
      switches: record.switches,
      lastSwitch: record.lastSwitch,
      exhausted: record.exhausted?.target === record.current,
      lock: snapshot.value,
      queued: snapshot.context.queue.length,
    };
  };

  /** Adopts the stored record (another process may have switched already) or creates it. */
  const ensureRecord = async (options: AgentOptions, log: Logger): Promise<AgentRecord> => {
    const { agentId, targets, current } = options;
    for (let attempt = 0; attempt < MAX_REGISTER_ATTEMPTS; attempt++) {
      const stored = await store.read(agentId);
      try {
        if (stored === undefined) {
          const record = initialAgentRecord(current);
          await store.create(agentId, record);
          return record;
        }
        if (targets.includes(stored.record.current)) return stored.record;
        // The target list changed since the record was written: restart from the configured target.
        log.warn({ stored: stored.record.current, current }, "stored target is no longer listed; resetting");
        const { exhausted: _dropped, ...rest } = stored.record;
        const record: AgentRecord = { ...rest, current };
        await store.update(agentId, record, stored.revision);
        return record;
      } catch (error) {
        // Another process created or changed the record meanwhile: read it again.
        if (!(error instanceof RevisionConflict)) throw error;
      }
    }
    throw new RevisionConflict({ key: agentId, message: `agent ${agentId}: record kept changing` });
  };

  const startLock = (options: AgentOptions, record: AgentRecord, log: Logger): Agent => {
    const { agentId, targets, load, onSwitch } = options;
    const skipForMs = options.skipForMs ?? DEFAULT_SKIP_FOR_MS;
    const measure = async (target: string): Promise<[string, number | undefined]> => {
      if (load === undefined) return [target, 0];
      try {
        return [target, await load(target)];
      } catch (error) {
        log.warn({ target, err: error }, "load probe failed; target treated as failing");
        return [target, undefined];
      }
    };
    const machine = agentLockMachine.provide({
      actors: {
        evaluate: fromPromise(async ({ input }: { input: EvaluateInput }) => {
          const stored = await store.read(agentId);
          if (stored === undefined)
            throw new UnknownAgent({ agentId, message: `agent ${agentId} has no record` });
          const at = now();
          const stale = isStale(stored.record, input.failure);
          const candidates = stale ? [] : eligibleTargets(targets, stored.record, at);
          const loads = new Map(await Promise.all(candidates.map(measure)));
          return decide({ ...stored, failure: input.failure, targets, loads, now: at, skipForMs });
        }),
        write: fromPromise(({ input }) => store.update(input.agentId, input.record, input.revision)),
        notifySwitch: fromPromise(async ({ input, signal }) => {
          await onSwitch?.({ ...input, signal });
        }),
      },
    });
    const actor = createActor(machine, { input: { agentId, record }, id: `agent-lock:${agentId}` });
    const agent: Agent = { options, actor, waiters: new Map() };
    const settle = (failureId: string): Waiter | undefined => {
      const waiter = agent.waiters.get(failureId);
      agent.waiters.delete(failureId);
      return waiter;
    };
    actor.on("failure.handled", ({ failureId, result }) => {
      const waiter = settle(failureId);
      const reason = waiter?.reason;
      if (result.outcome === "switched") log.info({ ...result, reason }, "agent switched target");
      else if (result.outcome === "stale") log.info({ ...result, reason }, "stale failure dropped");
      else log.warn({ ...result, reason }, "target failed and no alternative is eligible; staying");
      waiter?.resolve(result);
    });
    actor.on("failure.errored", ({ failureId, error }) => {
      log.error({ err: error, failureId }, "failure could not be handled");
      settle(failureId)?.reject(error);
    });
    actor.on("switch.notify-failed", ({ from, to, error }) => {
      log.error({ from, to, err: error }, "onSwitch failed; the switch stands");
    });
    // Lock transitions are debug: a burst walks idle→evaluating→idle once per failure.
    let last: AgentLockState = "idle";
    actor.subscribe({
      next: (snapshot) => {
        const queued = snapshot.context.queue.length;
        if (snapshot.value !== last)
          log.debug({ state: snapshot.value, from: last, queued }, "agent-lock state");
        last = snapshot.value;
        const state = stateOf(agent);
        for (const listener of listeners) {
          // A throwing listener must not take the lock down with it.
          try {
            listener(state);
          } catch (error) {
            log.error({ err: error }, "agent state listener threw");
          }
        }
      },
      error: (error) => {
        log.error({ err: error }, "agent lock crashed");
        for (const id of [...agent.waiters.keys()]) settle(id)?.reject(error);
      },
    });
    actor.start();
    return agent;
  };

  const register = async (options: AgentOptions): Promise<AgentState> => {
    if (stopped) throw new RuntimeStopped({ message: "agent registry is stopped" });
    validate(options);
    const { agentId } = options;
    if (agents.has(agentId) || registering.has(agentId)) {
      throw invalid(`agent ${agentId} is already registered`, "agentId");
    }
    registering.add(agentId);
    try {
      const log = childLogger(logger, { actor: "agent-lock", agentId });
      const record = await ensureRecord(options, log);
      if (stopped) throw new RuntimeStopped({ message: "agent registry stopped during register" });
      const agent = startLock({ ...options, targets: [...options.targets] }, record, log);
      agents.set(agentId, agent);
      log.info({ current: record.current, targets: options.targets }, "agent registered");
      return stateOf(agent);
    } finally {
      registering.delete(agentId);
    }
  };

  const reportFailure = async (agentId: string, report: FailureReport): Promise<FailureOutcome> => {
    if (stopped) throw new RuntimeStopped({ message: "agent registry is stopped" });
    check(AgentId, agentId, "agentId");
    const agent = agents.get(agentId);
    if (agent === undefined) throw new UnknownAgent({ agentId, message: `unknown agent ${agentId}` });
    const target = report?.target;
    if (!agent.options.targets.includes(target)) {
      throw invalid(`agent ${agentId}: ${String(target)} is not one of its targets`, "target");
    }
    failureSeq += 1;
    const failure = { id: String(failureSeq), target, reason: describeFailure(report.error) };
    return new Promise<FailureOutcome>((resolve, reject) => {
      agent.waiters.set(failure.id, { reason: failure.reason, resolve, reject });
      agent.actor.send({ type: "failure.reported", failure });
    });
  };

  return {
    register,
    reportFailure,
    list: async () =>
      (await store.list())
        .map(({ agentId, record: { v: _v, ...record } }): AgentInfo => ({ agentId, ...record }))
        .sort((a, b) => a.agentId.localeCompare(b.agentId)),
    get: (agentId) => {
      const agent = agents.get(agentId);
      return agent && stateOf(agent);
    },
    subscribe: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stop: async () => {
      stopped = true;
      for (const agent of agents.values()) {
        // Stopping the actor aborts its invoked effect; nothing is held in the store to release.
        agent.actor.stop();
        for (const waiter of agent.waiters.values()) {
          waiter.reject(new RuntimeStopped({ message: `agent ${agent.options.agentId}: registry stopped` }));
        }
        agent.waiters.clear();
      }
      listeners.clear();
    },
  };
};
