import { PermanentBrokerError, RevisionConflict } from "../errors.ts";

/**
 * The persisted state of one agent: which upstream target it is bound to and
 * which targets it must avoid until when. It is the unit of compare-and-set
 * across processes, so everything a switch decision reads lives in it.
 */
export const AGENT_RECORD_VERSION = 1 as const;

/** A target that must not be switched to before `until` (epoch ms). */
export interface SkipEntry {
  readonly target: string;
  readonly until: number;
}

export interface SwitchSummary {
  readonly from: string;
  readonly to: string;
  /** Epoch ms of the decision. */
  readonly at: number;
  /** Why `from` was left: the reported error, shortened. */
  readonly reason: string;
}

export interface AgentRecord {
  readonly v: typeof AGENT_RECORD_VERSION;
  readonly current: string;
  readonly skips: readonly SkipEntry[];
  /** Count of switches ever made: lets tests (and operators) see "exactly one". */
  readonly switches: number;
  readonly lastSwitch?: SwitchSummary;
  /** Set when `target` failed and no alternative was eligible; cleared by the next switch. */
  readonly exhausted?: { readonly target: string; readonly at: number };
}

export interface StoredAgent {
  readonly record: AgentRecord;
  readonly revision: number;
}

/**
 * The port the lock actor's effects use. Revisions make every write a
 * compare-and-set, which is all the cross-process protocol needs: nothing is
 * ever held, so a process that dies mid-switch leaves nothing behind.
 */
export interface AgentStore {
  read(agentId: string): Promise<StoredAgent | undefined>;
  /** Creates the record; throws `RevisionConflict` when it already exists. */
  create(agentId: string, record: AgentRecord): Promise<number>;
  /** Replaces the record at `revision`; throws `RevisionConflict` when another writer got there first. */
  update(agentId: string, record: AgentRecord, revision: number): Promise<number>;
}

// The agents' errors live with the others; re-exported for existing importers.
export { TargetUnavailable, UnknownAgent } from "../errors.ts";

export const initialAgentRecord = (current: string): AgentRecord => ({
  v: AGENT_RECORD_VERSION,
  current,
  skips: [],
  switches: 0,
});

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const isSkipEntry = (value: unknown): value is SkipEntry =>
  isObject(value) && typeof value.target === "string" && typeof value.until === "number";

/**
 * Validates a record read from storage. Persisted data outlives the code that
 * wrote it, so an unknown version fails loudly instead of being misread.
 */
export const parseAgentRecord = (agentId: string, value: unknown): AgentRecord => {
  const invalid = (why: string) =>
    new PermanentBrokerError({
      operation: "agents.read",
      message: `agent record for ${agentId} is unreadable: ${why}`,
    });
  if (!isObject(value)) throw invalid("not an object");
  if (value.v !== AGENT_RECORD_VERSION) throw invalid(`unsupported version ${String(value.v)}`);
  if (typeof value.current !== "string") throw invalid("current is not a string");
  if (!Array.isArray(value.skips) || !value.skips.every(isSkipEntry)) throw invalid("bad skip list");
  if (typeof value.switches !== "number") throw invalid("switches is not a number");
  return value as unknown as AgentRecord;
};

export interface MemoryAgentStore extends AgentStore {
  /** How many updates succeeded (creates excluded): a test's witness that losers never wrote. */
  readonly updates: () => number;
}

/**
 * In-process store with the same CAS contract as the KV adapter. Records are
 * cloned on the way in and out so no caller can mutate what another reads.
 */
export const memoryAgentStore = (): MemoryAgentStore => {
  const entries = new Map<string, StoredAgent>();
  let sequence = 0;
  let updates = 0;
  const conflict = (agentId: string, why: string) =>
    new RevisionConflict({ key: agentId, message: `agent ${agentId}: ${why}` });
  const put = (agentId: string, record: AgentRecord): number => {
    sequence += 1;
    entries.set(agentId, { record: structuredClone(record), revision: sequence });
    return sequence;
  };
  return {
    read: async (agentId) => {
      const entry = entries.get(agentId);
      return entry && { record: structuredClone(entry.record), revision: entry.revision };
    },
    create: async (agentId, record) => {
      if (entries.has(agentId)) throw conflict(agentId, "record already exists");
      return put(agentId, record);
    },
    update: async (agentId, record, revision) => {
      const entry = entries.get(agentId);
      if (entry === undefined) throw conflict(agentId, "record does not exist");
      if (entry.revision !== revision) {
        throw conflict(agentId, `revision ${revision} is stale (now ${entry.revision})`);
      }
      updates += 1;
      return put(agentId, record);
    },
    updates: () => updates,
  };
};
