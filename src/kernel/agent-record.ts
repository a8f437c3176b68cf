import { Schema } from "effect";
import { decode } from "./decode.ts";
import { PermanentBrokerError } from "./errors.ts";

/**
 * The persisted state of one agent: which upstream target it is bound to and
 * which targets it must avoid until when. It is the unit of compare-and-set
 * across processes, so everything a switch decision reads lives in it.
 */
const AGENT_RECORD_VERSION = 1 as const;

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

const SkipEntryShape = Schema.Struct({ target: Schema.String, until: Schema.Number });

/** The stored shape; open, so a field a later writer of the same version adds is kept. */
const AgentRecordShape = Schema.Struct({
  v: Schema.Literal(AGENT_RECORD_VERSION),
  current: Schema.String,
  skips: Schema.Array(SkipEntryShape),
  switches: Schema.Number,
  lastSwitch: Schema.optionalKey(
    Schema.Struct({ from: Schema.String, to: Schema.String, at: Schema.Number, reason: Schema.String }),
  ),
  exhausted: Schema.optionalKey(Schema.Struct({ target: Schema.String, at: Schema.Number })),
} satisfies Record<keyof AgentRecord, Schema.Top>);

/**
 * Validates a record read from storage and returns it as it was read (a
 * field it does not know is written back unchanged). Persisted data outlives
 * the code that wrote it, so an unknown version fails loudly instead of being
 * misread.
 */
export const parseAgentRecord = (agentId: string, value: unknown): AgentRecord => {
  const decoded = decode(AgentRecordShape, value, "", { open: true });
  if (decoded.ok) return value as AgentRecord;
  const why =
    decoded.field === ""
      ? "not an object"
      : decoded.field === "v"
        ? `unsupported version ${String((value as { v?: unknown }).v)}`
        : `${decoded.field}: ${decoded.message}`;
  throw new PermanentBrokerError({
    operation: "agents.read",
    message: `agent record for ${agentId} is unreadable: ${why}`,
  });
};
