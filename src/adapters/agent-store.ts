import type { AgentRecord } from "../kernel/agent-record.ts";

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
  /** Every stored agent, by id. */
  list(): Promise<Array<{ readonly agentId: string; readonly record: AgentRecord }>>;
  /** Creates the record; throws `RevisionConflict` when it already exists. */
  create(agentId: string, record: AgentRecord): Promise<number>;
  /** Replaces the record at `revision`; throws `RevisionConflict` when another writer got there first. */
  update(agentId: string, record: AgentRecord, revision: number): Promise<number>;
}
