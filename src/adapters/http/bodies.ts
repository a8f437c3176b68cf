import { Schema } from "effect";
import { JobStatus as JobStatuses } from "../../kernel/job-record.ts";
import { number } from "../../kernel/validation.ts";

/**
 * Every JSON body of the HTTP pull API, once: request-bodies.ts decodes the
 * requests with these schemas, http-app.ts types its answers with them, and
 * openapi.ts derives the document's components from them. An `identifier`
 * is the component's name.
 */

export interface BodyLimits {
  readonly maxBatchSize: number;
  readonly maxResults: number;
}

const maxReceiptChars = 1024;

const text = (description: string) => Schema.String.annotate({ description });
const Count = Schema.Int;
const countOf = (description: string) => Schema.Int.annotate({ description });
/**
 * Any JSON value, taken as it is: `Schema.Json` would walk the whole value
 * (a large result costs a walk per request), and `Schema.Unknown` loses its
 * description in the document.
 */
const anyJson = (description: string) => Schema.Any.annotate({ description });
/** Between `min` and `max` items; the message names both. */
const itemsBetween = (min: number, max: number) =>
  [
    Schema.isMinLength(min, { message: `must have ${min}–${max} items` }),
    Schema.isMaxLength(max, { message: `must have ${min}–${max} items` }),
  ] as const;

// ---- requests ----

const Receipt = Schema.String.check(
  Schema.isMinLength(1, { message: `must have 1–${maxReceiptChars} characters` }),
  Schema.isMaxLength(maxReceiptChars, { message: `must have 1–${maxReceiptChars} characters` }),
).annotate({ identifier: "Receipt" });

const TaskError = Schema.Struct({
  message: Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" })).annotate({
    description:
      "Stored truncated to 256 characters, with a note of its length (the body limit bounds what is read).",
  }),
  permanent: Schema.optionalKey(Schema.Boolean).annotate({
    default: false,
    description: "true: never retry (counted failed); false: retried with the job's backoff",
  }),
});

/** One answer: a result, or an error; never both. */
const TaskAnswer = Schema.Struct({
  receipt: Receipt,
  result: Schema.optionalKey(anyJson("Any JSON value (at most 256 KiB)")),
  error: Schema.optionalKey(TaskError),
})
  .check(
    Schema.makeFilter((item) => "result" in item !== "error" in item, {
      message: 'must have exactly one of "result" and "error"',
      toJsonSchema: () => ({ oneOf: [{ required: ["result"] }, { required: ["error"] }] }),
    }),
  )
  .annotate({ identifier: "TaskAnswer" });

/** The request bodies; their bounds are the service's configuration. */
export const requestBodies = (limits: BodyLimits) => ({
  ReserveRequest: Schema.Struct({
    batch_size: number(1, limits.maxBatchSize, { integer: true }),
  }).annotate({ identifier: "ReserveRequest" }),
  ResultsRequest: Schema.Struct({
    results: Schema.Array(TaskAnswer).check(...itemsBetween(1, limits.maxResults)),
  }).annotate({ identifier: "ResultsRequest" }),
  HeartbeatRequest: Schema.Struct({
    receipts: Schema.Array(Receipt).check(...itemsBetween(1, limits.maxResults)),
  }).annotate({ identifier: "HeartbeatRequest" }),
});

// ---- responses ----

const ErrorBody = Schema.Struct({
  error: Schema.Struct({
    code: Schema.String,
    message: Schema.String,
    field: Schema.optionalKey(text("The offending field, for invalid_request.")),
  }),
}).annotate({ identifier: "Error" });

const Health = Schema.Struct({
  status: Schema.Literals(["ok", "unavailable"]),
  connection: Schema.String,
}).annotate({ identifier: "Health" });

const JobStatus = Schema.Literals(Object.values(JobStatuses)).annotate({ identifier: "JobStatus" });

/** What every view of a job shows: who it is and its counts. */
const jobCounts = {
  id: Schema.String,
  queue: Schema.String,
  status: JobStatus,
  total: Count,
  done: Count,
  failed: Count,
  dead: Count,
};

const JobSummary = Schema.Struct({
  ...jobCounts,
  created_at: countOf("ms since the epoch"),
  updated_at: countOf("ms since the epoch"),
}).annotate({ identifier: "JobSummary" });

const JobList = Schema.Struct({
  jobs: Schema.Array(JobSummary),
  next: Schema.optionalKey(
    text(
      "Pass it as `cursor`, with the same queue and status, for the page after this one; absent when this page reached the end.",
    ),
  ),
}).annotate({ identifier: "JobList" });

const Job = Schema.Struct({
  ...jobCounts,
  throughput: Schema.NullOr(Schema.Finite).annotate({ description: "Tasks answered per second (EWMA)." }),
  eta_ms: Schema.NullOr(Count).annotate({
    description: "Estimated time to the end; null until there is a rate.",
  }),
  reason: Schema.NullOr(Schema.String),
}).annotate({ identifier: "Job" });

const ReservedTask = Schema.Struct({
  id: text("`<job_id>.<index>`, stable across deliveries"),
  job_id: Schema.String,
  index: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  attempt: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)).annotate({ description: "Delivery number" }),
  payload: anyJson("The task as submitted"),
  receipt: text("Post it with the result; valid for this delivery only"),
  lease_ms: countOf("Post the result (or heartbeat) within this many ms"),
}).annotate({ identifier: "ReservedTask" });

const ReservedTasks = Schema.Struct({ tasks: Schema.Array(ReservedTask) }).annotate({
  identifier: "ReservedTasks",
});

const ItemOutcome = Schema.Struct({
  id: Schema.String,
  status: Schema.Literals(["done", "failed", "dead", "retry", "expired", "pending", "conflict"]).annotate({
    description:
      "done: result stored, task acked; failed: error stored, task terminated; dead: the last " +
      "delivery failed; retry: handed back, offered again after retry_in_ms; expired: the lease had " +
      "ended (or was of the job before its key was submitted again), nothing was done; pending: a " +
      "concurrent request is storing the same answer; " +
      "conflict: the delivery was answered before with another answer, nothing was done",
  }),
  duplicate: Schema.optionalKey(Schema.Boolean).annotate({
    description: "Answered before with the same answer: status is the first answer's",
  }),
  answered: Schema.optionalKey(
    Schema.Literals(["done", "failed", "dead", "retry", "pending"]).annotate({
      description: "For conflict: what the first answer did",
    }),
  ),
  retry_in_ms: Schema.optionalKey(Count),
});

const ResultsResponse = Schema.Struct({ results: Schema.Array(ItemOutcome) }).annotate({
  identifier: "ResultsResponse",
});

const HeartbeatOutcome = Schema.Struct({
  id: Schema.String,
  status: Schema.Literals(["extended", "expired", "settled"]).annotate({
    description:
      "settled: already answered; expired: the lease had ended (or was of the job before its key was " +
      "submitted again)",
  }),
  receipt: Schema.optionalKey(text("For extended: use this receipt from now on")),
  lease_ms: Schema.optionalKey(Count),
});

const HeartbeatResponse = Schema.Struct({ receipts: Schema.Array(HeartbeatOutcome) }).annotate({
  identifier: "HeartbeatResponse",
});

/** The response bodies: what the service answers (objects stay open to fields added later). */
export const responseBodies = {
  Error: ErrorBody,
  Health,
  JobList,
  Job,
  ReservedTasks,
  ResultsResponse,
  HeartbeatResponse,
};

export type JobBody = typeof Job.Type;
export type JobListBody = typeof JobList.Type;
export type ReservedTaskBody = typeof ReservedTask.Type;
export type ItemOutcomeBody = typeof ItemOutcome.Type;
export type HeartbeatOutcomeBody = typeof HeartbeatOutcome.Type;
export type HealthBody = typeof Health.Type;
