import type { BrokerAdmin } from "./broker-admin.ts";
import type { DeadLetters } from "./dead-letters.ts";
import type { DelayedTasks } from "./delayed-tasks.ts";
import type { FlowStore } from "./flow-store.ts";
import type { JobPort } from "./job-port.ts";
import type { RecordPages, RecordWatch } from "./job-records.ts";
import type { JobResults } from "./job-results.ts";
import type { Presence } from "./presence.ts";
import type { QueueControls } from "./queue-controls.ts";
import type { SupervisionLeases } from "./supervision-leases.ts";
import type { TaskLeasing } from "./task-leasing.ts";
import type { TaskDelivery } from "./task-queue.ts";

/**
 * The broker: every port jobs, workers and the job actor need from a message
 * broker, in one object for the wiring. Each part is a small port of its
 * own (job records, tasks, results, dead letters, leases, admin), and code
 * that needs one part takes that part. Two implementations keep the same
 * semantics, checked by one contract suite (test/contract/):
 * - NATS JetStream (src/adapters/nats/nats-broker.ts), for production;
 * - in memory (src/adapters/memory/memory-broker.ts), the embedded default
 *   when no NATS is configured, and the base of `jetstate-jobs/testing`.
 *
 * Long-running methods (`consumeTasks`, `readResults`, `watchRecordChanges`,
 * `processExhausted`) run until their signal aborts (or the job's consumer
 * is gone) and keep themselves alive across reconnects.
 */
export interface Broker
  extends JobPort,
    RecordPages,
    RecordWatch,
    TaskDelivery,
    JobResults,
    DeadLetters,
    DelayedTasks,
    BrokerAdmin {
  readonly kind: "nats" | "memory";
  /** Largest message the broker takes, in bytes. */
  maxPayload(): Promise<number>;

  readonly leases: SupervisionLeases;
  /** What live workers say of themselves (`rt.workers.list()`). */
  readonly presence: Presence;
  /** Each queue's settings and permits (`rt.queues`). */
  readonly queueControls: QueueControls;
  /** Leasing by reference and recorded answers, for the HTTP pull API. */
  readonly taskLeasing: TaskLeasing;
  /** Flow records (`rt.flows`). */
  readonly flows: FlowStore;

  /** Releases what the broker holds (timers, subscriptions); the runtime's connection is closed separately. */
  close(): Promise<void>;
}

// Files that name these types through the broker (the HTTP adapter, workers).
export type { AnswerStatus, LeaseSettle, RecordedAnswer, TaskLeasing } from "./task-leasing.ts";
export type { TaskLease } from "./task-queue.ts";
