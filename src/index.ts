/**
 * jetstate's public API: nothing else is exported. See docs/architecture.md.
 */

export type { Broker } from "./adapters/broker.ts";
export type { CleanupOptions, CleanupReport } from "./adapters/broker-admin.ts";
export type { DeadLetter } from "./adapters/dead-letters.ts";
export type { AuthOptions, TlsOptions } from "./adapters/nats/security.ts";
export type { ConnectionHandle, ConnectionView } from "./adapters/nats/supervised-connection.ts";
export type {
  AgentOptions,
  AgentState,
  Agents,
  FailureOutcome,
  FailureReport,
  SwitchNotice,
} from "./api/agents.ts";
export type { ConnectionOptions } from "./api/connection-options.ts";
export { createDashboard, type Dashboard, type DashboardOptions } from "./api/dashboard.ts";
export type { Diagnosis, MeantFor, Problem, RoleCheck, StoreCheck } from "./api/diagnosis.ts";
export type {
  FlowDependency,
  FlowHandle,
  FlowJobRequest,
  FlowPolicy,
  FlowRequest,
  FlowSnapshot,
  Flows,
} from "./api/flows.ts";
export {
  createHttpApi,
  type HttpApi,
  type HttpApiOptions,
  type TokenConfig,
  type TokenRole,
  type TokenScopeOptions,
} from "./api/http.ts";
export type { JobEvents, JobEventsOptions } from "./api/job-events.ts";
export type { JobHandle, JobSnapshot, TaskResult } from "./api/job-handle.ts";
export type { JobRuntimeOptions } from "./api/job-options.ts";
export type { JobListQuery, JobPage, Jobs } from "./api/jobs-face.ts";
export { createMetrics, type Metrics, type MetricsOptions } from "./api/metrics.ts";
export type { InspectorLike, RuntimeOptions } from "./api/options.ts";
export {
  type NatsPermissions,
  natsPermissions,
  type PermissionsRequest,
  type Role,
} from "./api/permissions.ts";
export type {
  PerTargetLimits,
  PerTargetSettings,
  QueueLimits,
  QueueSettings,
  Queues,
} from "./api/queues.ts";
export { createRuntime, type Runtime, type WorkerListQuery } from "./api/runtime.ts";
export type { ScheduleInfo, ScheduleRequest, Schedules } from "./api/schedules.ts";
export { version } from "./api/version.ts";
export type { Task, TaskContext, Worker, WorkerOptions, WorkerStats } from "./api/workers.ts";
export type { SubmitRequest } from "./effects/plan-submit.ts";
export type { SkipEntry, SwitchSummary } from "./kernel/agent-record.ts";
export type { Clock } from "./kernel/clock.ts";
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
} from "./kernel/errors.ts";
export type { FlowStatus, NodeStatus, OnChildFailure } from "./kernel/flow-record.ts";
export type { JobEvent, JobEventType } from "./kernel/job-event.ts";
export type { JobCounts, JobRecord, JobSettings, JobStatus } from "./kernel/job-record.ts";
export type { Logger } from "./kernel/logger.ts";
export type { AgentInfo, WorkerInfo } from "./kernel/presence.ts";
export { defineQueue, type Queue, type Schema, type StandardSchema } from "./kernel/queue.ts";
export {
  type MissedTicks,
  type ScheduledJob,
  type ScheduleRecord,
  type ScheduleRule,
  scheduleOfJob,
} from "./kernel/schedule-record.ts";
export { PermanentError } from "./kernel/task-outcome.ts";
export type { TaskProgress } from "./kernel/wire.ts";
export type { BackoffPolicy, ConnectionState } from "./machines/connection.machine.ts";
export type { FlowNodeView } from "./machines/flow.machine.ts";
export type { QueueState } from "./machines/queue.machine.ts";
