import { assign, fromPromise, setup } from "xstate";
import { allNodesEnded, type FlowRecord, type FlowStatus, type NodeStatus } from "../kernel/flow-record.ts";

/**
 * One actor per flow watched by a runtime: the whole flow as one statechart
 * for the inspector, its nodes (each a job) in context.
 *
 * ```
 * checking → submitting → running → succeeded | failed | cancelled
 *          ↘ (a record already stored) → running or its end
 * ```
 *
 * The flow record is the truth; the machine follows it. `submitting` invokes
 * `writeRecord` (the runtime writes the record, the commit point); every
 * record read or written after that comes as `flow.changed`, and the flow's
 * end is the record's. No I/O here: the runtime provides `writeRecord`.
 */

export interface FlowNodeView {
  readonly jobId: string;
  readonly status: NodeStatus;
  readonly dependsOn: readonly string[];
  readonly reason?: string;
}

export interface FlowContext {
  readonly flowId: string;
  readonly status: FlowStatus;
  readonly nodes: Readonly<Record<string, FlowNodeView>>;
  readonly reason?: string;
}

export interface FlowInput {
  readonly flowId: string;
  /** The record as stored: a flow found (`get`); absent for a flow being submitted here. */
  readonly record?: FlowRecord;
}

export type FlowEvent = { readonly type: "flow.changed"; readonly record: FlowRecord };

/** The nodes of a record as the machine shows them: no requests (their tasks may be large). */
const nodeViews = (record: FlowRecord): Record<string, FlowNodeView> =>
  Object.fromEntries(
    Object.entries(record.nodes).map(([name, node]) => [
      name,
      {
        jobId: node.jobId,
        status: node.status,
        dependsOn: node.dependsOn,
        ...(node.reason === undefined ? {} : { reason: node.reason }),
      },
    ]),
  );

const fromRecord = (record: FlowRecord) => ({
  status: record.status,
  nodes: nodeViews(record),
  ...(record.reason === undefined ? {} : { reason: record.reason }),
});

const ends = [
  { guard: "succeeded", target: "succeeded" },
  { guard: "failed", target: "failed" },
  { guard: "cancelled", target: "cancelled" },
] as const;

export const flowMachine = setup({
  types: {
    context: {} as FlowContext,
    events: {} as FlowEvent,
    input: {} as FlowInput,
  },
  actors: {
    /**
     * Writes the flow record (create, compare-and-set); resolves with the record stored under
     * the id: this one, or another runtime's flow of the id whose submit won (followed from then on).
     */
    writeRecord: fromPromise<FlowRecord, { flowId: string }>(async () => {
      throw new Error("writeRecord not provided");
    }),
  },
  guards: {
    /** A flow has at least one node: none in context means its record is still to be written. */
    stored: ({ context }) => Object.keys(context.nodes).length > 0,
    succeeded: ({ context }) => context.status === "succeeded",
    failed: ({ context }) => context.status === "failed",
    // The record says cancelled at once; the flow has ended once no job of it runs or is still
    // to be cancelled (a step cancels them, and writes each node's end).
    cancelled: ({ context }) => context.status === "cancelled" && allNodesEnded(context.nodes),
  },
  actions: {
    follow: assign(({ event }) => fromRecord(event.record)),
  },
}).createMachine({
  id: "flow",
  context: ({ input }) => ({
    flowId: input.flowId,
    ...(input.record ? fromRecord(input.record) : { status: "running" as const, nodes: {} }),
  }),
  initial: "checking",
  states: {
    checking: {
      always: [...ends, { guard: "stored", target: "running" }, { target: "submitting" }],
    },
    submitting: {
      invoke: {
        src: "writeRecord",
        input: ({ context }) => ({ flowId: context.flowId }),
        onDone: { target: "running", actions: assign(({ event }) => fromRecord(event.output)) },
        onError: {
          target: "failed",
          actions: assign(({ event }) => ({
            status: "failed" as const,
            reason: `not submitted: ${event.error instanceof Error ? event.error.message : String(event.error)}`,
          })),
        },
      },
    },
    running: {
      always: [...ends],
      on: { "flow.changed": { actions: "follow" } },
    },
    succeeded: { type: "final" },
    failed: { type: "final" },
    cancelled: { type: "final" },
  },
});

export type FlowMachine = typeof flowMachine;
