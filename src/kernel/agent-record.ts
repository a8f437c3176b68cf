import { PermanentBrokerError } from "./errors.ts";

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
