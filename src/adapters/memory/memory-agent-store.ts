import type { AgentRecord } from "../../kernel/agent-record.ts";
import { RevisionConflict } from "../../kernel/errors.ts";
import type { AgentStore, StoredAgent } from "../agent-store.ts";

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
    list: async () =>
      [...entries].map(([agentId, entry]) => ({ agentId, record: structuredClone(entry.record) })),
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
