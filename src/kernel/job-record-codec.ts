import { Schema } from "effect";
import { decode } from "./decode.ts";
import { type JobRecord, type JobRecordV1, type JobSettings, JobStatus, SubmitPhase } from "./job-record.ts";
import { boundReason } from "./reason.ts";

/**
 * A job record as stored: written as JSON (its reason bounded), read back
 * checked against the shape of its version (the record's types and rules:
 * job-record.ts).
 */

/** The record as stored, its reason bounded (`boundReason`: a cancel's reason is the caller's text). */
export const encodeRecord = (record: JobRecord): string =>
  JSON.stringify(record.reason === undefined ? record : { ...record, reason: boundReason(record.reason) });

const Count = Schema.Number;

/** The stored shape of version 1; open, so a field a later writer of the same version adds is kept. */
const JobRecordShape = Schema.Struct({
  v: Schema.Literal(1),
  id: Schema.String,
  queue: Schema.String,
  status: Schema.Literals(Object.values(JobStatus)),
  phase: Schema.Literals(Object.values(SubmitPhase)),
  total: Count,
  submitId: Schema.String,
  idempotencyKey: Schema.optionalKey(Schema.String),
  requestDigest: Schema.optionalKey(Schema.String),
  settings: Schema.Struct({
    maxFailures: Schema.Number,
    ackWaitMs: Schema.Number,
    maxDeliver: Schema.Number,
    backoffMs: Schema.Array(Schema.Number),
    stallAfterMs: Schema.Number,
    stalledTimeoutMs: Schema.Number,
    priority: Schema.optionalKey(Schema.Number),
  } satisfies Record<keyof JobSettings, Schema.Top>),
  counts: Schema.Struct({ done: Count, failed: Count, dead: Count }),
  createdAt: Schema.Number,
  updatedAt: Schema.Number,
  commitDeadline: Schema.Number,
  finishedAt: Schema.optionalKey(Schema.Number),
  reason: Schema.optionalKey(Schema.String),
  lane: Schema.optionalKey(Schema.Literal(true)),
  runAt: Schema.optionalKey(Schema.Number),
  dueUntil: Schema.optionalKey(Schema.Number),
  redrive: Schema.optionalKey(Schema.String),
  redriveFailed: Schema.optionalKey(Schema.String),
  supervisor: Schema.optionalKey(Schema.String),
} satisfies Record<keyof JobRecordV1, Schema.Top>);

/**
 * A record read back, checked and returned as it was stored (a field this
 * version does not know is written back unchanged). An unknown version fails
 * loudly: persisted data outlives the code that wrote it.
 */
export const decodeRecord = (text: string): JobRecord => {
  const value: unknown = JSON.parse(text);
  const decoded = decode(JobRecordShape, value, "", { open: true });
  if (decoded.ok) return value as JobRecord;
  const { v, id } = (typeof value === "object" && value !== null ? value : {}) as {
    v?: unknown;
    id?: unknown;
  };
  if (decoded.field === "v" || v !== 1) throw new Error(`unsupported job record version ${String(v)}`);
  throw new Error(`job record ${String(id)} is unreadable: ${decoded.field || "record"}: ${decoded.message}`);
};
