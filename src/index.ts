/**
 * jetstate's public API: nothing else is exported. See docs/architecture.md.
 */

export type { Broker, CleanupOptions, CleanupReport, DeadLetter } from "./adapters/broker.ts";
export type {
  AgentOptions,
  AgentState,
  Agents,
  FailureOutcome,
  FailureReport,
  SwitchNotice,
} from "./agents.ts";
export type { Clock } from "./clock.ts";
export type { ConnectionHandle, ConnectionView } from "./connection.ts";
export type { SkipEntry, SwitchSummary } from "./effects/agent-store.ts";
export type { JobCounts, JobRecord, JobSettings, JobStatus } from "./effects/job-record.ts";
export type { SubmitRequest } from "./effects/plan-submit.ts";
export { PermanentError } from "./effects/task-outcome.ts";
export type { TaskProgress } from "./effects/task-progress.ts";
export {
  ConnectionUnavailable,
  IdempotencyConflict,
  InvalidArgument,
  isTransient,
  type JetstateError,
  OperationTimeout,
  PermanentBrokerError,
  Retry,
  type RetryDecision,
  RevisionConflict,
  RoleNotHeld,
  RuntimeStopped,
  TargetUnavailable,
  TransientBrokerError,
  UnknownAgent,
} from "./errors.ts";
export {
  createHttpApi,
  type HttpApi,
  type HttpApiOptions,
  type TokenConfig,
  type TokenRole,
  type TokenScopeOptions,
} from "./http.ts";
export type { JobHandle, JobSnapshot, Jobs, TaskResult } from "./jobs.ts";
export type { Logger } from "./logger.ts";
export type { BackoffPolicy, ConnectionState } from "./machines/connection.machine.ts";
export type { ConnectionOptions, InspectorLike, JobRuntimeOptions, RuntimeOptions } from "./options.ts";
export { type NatsPermissions, natsPermissions, type PermissionsRequest, type Role } from "./permissions.ts";
export { defineQueue, type Queue, type Schema, type StandardSchema } from "./queue.ts";
export { createRuntime, type Runtime } from "./runtime.ts";
export type { AuthOptions, TlsOptions } from "./security.ts";
export type { Task, TaskContext, Worker, WorkerOptions, WorkerStats } from "./workers.ts";
