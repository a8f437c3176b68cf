import type { FlowRecord } from "../kernel/flow-record.ts";

/** A flow not settled, as its mark says: the drivers' sweep reads these, never every flow kept. */
export interface LiveMark {
  readonly id: string;
  readonly revision: number;
  /** When it was marked (epoch ms, the marking runtime's clock). */
  readonly markedAt: number;
}

/**
 * Flow records (a KV bucket `<prefix>_flows` on NATS, key = flow id): read and
 * written with compare-and-set on the revision, so any number of drivers
 * (every runtime with the submitter role) step a flow without overwriting
 * each other. Beside them, one mark per flow not settled (key
 * `live.<flowId>`: a flow id has no dot, so a mark is never read as a
 * flow), written before the record and removed once the flow settled: the
 * index the sweep reads, O(flows not settled).
 */
export interface FlowStore {
  /** Creates the record; throws `RevisionConflict` when a flow with its id exists. */
  createFlow(record: FlowRecord): Promise<number>;
  getFlow(id: string): Promise<{ record: FlowRecord; revision: number } | undefined>;
  /** Throws `RevisionConflict` when the record changed since `revision`. */
  updateFlow(record: FlowRecord, revision: number): Promise<number>;
  /** Marks the flow not settled (written again: a newer revision). */
  markLive(id: string, at: number): Promise<void>;
  /** Every mark stored. */
  listLive(): Promise<LiveMark[]>;
  /** Removes the flow's mark, nothing of it left; with `revision`, only up to it (a mark written since stays). */
  unmarkLive(id: string, revision?: number): Promise<void>;
  /** Every flow record stored, marks and unreadable records left out: cleanup's pass, O(flows kept). */
  listFlows(): Promise<Array<{ record: FlowRecord; revision: number }>>;
  /**
   * Removes the record, nothing of it left (no delete marker), when it is
   * still at `revision`; false when it is not (written since, or gone).
   */
  removeFlow(id: string, revision: number): Promise<boolean>;
}
