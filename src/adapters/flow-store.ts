import type { FlowRecord } from "../kernel/flow-record.ts";

/**
 * Flow records (a KV bucket `<prefix>_flows` on NATS, key = flow id): read and
 * written with compare-and-set on the revision, so any number of drivers
 * (every runtime with the submitter role) step a flow without
 * overwriting each other.
 */
export interface FlowStore {
  /** Creates the record; throws `RevisionConflict` when a flow with its id exists. */
  createFlow(record: FlowRecord): Promise<number>;
  getFlow(id: string): Promise<{ record: FlowRecord; revision: number } | undefined>;
  /** Throws `RevisionConflict` when the record changed since `revision`. */
  updateFlow(record: FlowRecord, revision: number): Promise<number>;
  /** Every flow record kept (the drivers' sweep picks the ones not settled). */
  listFlows(): Promise<FlowRecord[]>;
}
