/**
 * The OpenAPI 3.1 document of the HTTP pull API, served at `GET /openapi.json`.
 * request-bodies.ts checks the same shapes by hand (with errors that name the
 * field); test/unit/http-openapi.test.ts keeps the two in step.
 */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object) => ({ "application/json": { schema } });
const error = (description: string) => ({ description, content: json(ref("Error")) });

const commonErrors = {
  "401": error("No bearer token (`missing_token`) or an unknown one (`invalid_token`)."),
  "403": error(
    "The token's role does not allow this (`forbidden`: `worker` tokens reserve, answer and heartbeat; " +
      "`read` tokens list and show jobs), or the queue is not one of the token's (`forbidden`).",
  ),
  "503": error("NATS is unavailable or the runtime is stopping (`unavailable`); retry later."),
};
const bodyErrors = {
  "400": error(
    "Malformed JSON (`invalid_json`), a field of the wrong type or out of range (`invalid_request`, with `field`), " +
      "a receipt that was not issued by this service (`invalid_receipt`) or belongs to another job (`receipt_wrong_job`).",
  ),
  "403": error(
    "The token's role does not allow this (`forbidden`), or a receipt was leased by another token " +
      "(`receipt_not_yours`): only the token that reserved a task may answer or heartbeat it.",
  ),
  "413": error("The body is larger than the limit (`body_too_large`, default 1 MiB)."),
};
const jobErrors = {
  "404": error("No such job, or one of a queue the token may not use (`job_not_found`)."),
  "410": error("The job has finished (`job_finished`): it takes no more work."),
};

const tooManyLeases = error(
  "The token already holds its maximum of open leases on this instance (`too_many_leases`, with `max_leases`): " +
    "answer some, or let them expire, then retry (`Retry-After`). A smaller batch is granted when some room is left.",
);

const jobId = {
  name: "id",
  in: "path",
  required: true,
  schema: { type: "string", pattern: "^[A-Za-z0-9_-]{1,128}$" },
};
const queueName = {
  name: "queue",
  in: "path",
  required: true,
  schema: { type: "string", pattern: "^[A-Za-z0-9_-]{1,128}$" },
};

export const openApiDocument = (limits: {
  maxBatchSize: number;
  maxResults: number;
  maxBodyBytes: number;
}) => ({
  openapi: "3.1.0",
  info: {
    title: "jetstate HTTP pull API",
    version: "1",
    description:
      "Workers that cannot reach NATS (behind a firewall) lease tasks over HTTP with the same contract as native " +
      "workers: reserve, process, post the result (stored before the task is acked), heartbeat long tasks. " +
      "Every receipt is signed and names one delivery of one task of one job and the token that reserved it; " +
      "it expires with its lease, and the answer given for a delivery is kept by the broker, so a receipt is " +
      "answered once, whichever API instance it is posted to. Tokens have a role (`worker` or `read`) and queues. " +
      `Bodies are JSON of at most ${limits.maxBodyBytes} bytes. Every error is \`{ error: { code, message } }\`.`,
  },
  security: [{ bearer: [] }],
  paths: {
    "/healthz": {
      get: {
        operationId: "health",
        security: [],
        summary: "Liveness and the state of the NATS connection (`memory` on the memory broker)",
        responses: {
          "200": { description: "Connected to NATS, or on the memory broker", content: json(ref("Health")) },
          "503": { description: "Not connected to NATS", content: json(ref("Health")) },
        },
      },
    },
    "/openapi.json": {
      get: {
        operationId: "openapi",
        security: [],
        summary: "This document",
        responses: { "200": { description: "OpenAPI 3.1 document", content: json({ type: "object" }) } },
      },
    },
    "/jobs": {
      get: {
        operationId: "listJobs",
        summary: "Jobs of the token's queues, oldest first (a `read` token)",
        parameters: [
          { name: "queue", in: "query", schema: { type: "string", pattern: "^[A-Za-z0-9_-]{1,128}$" } },
          {
            name: "status",
            in: "query",
            description: "`active` is running or stalled.",
            schema: { enum: ["active", "queuing", "running", "stalled", "succeeded", "failed"] },
          },
          {
            name: "limit",
            in: "query",
            schema: { type: "integer", minimum: 1, maximum: 1000, default: 100 },
          },
        ],
        responses: {
          "200": {
            description: "The jobs",
            content: json({
              type: "object",
              required: ["jobs"],
              properties: { jobs: { type: "array", items: ref("JobSummary") } },
            }),
          },
          "400": error("A query parameter is invalid (`invalid_request`)."),
          ...commonErrors,
          "403": error("Not a `read` token, or `queue` is not one of the token's (`forbidden`)."),
        },
      },
    },
    "/jobs/{id}": {
      get: {
        operationId: "getJob",
        summary: "Status, counters and ETA of a job (a `read` token)",
        parameters: [jobId],
        responses: {
          "200": { description: "The job", content: json(ref("Job")) },
          "404": jobErrors["404"],
          ...commonErrors,
        },
      },
    },
    "/jobs/{id}/tasks": {
      post: {
        operationId: "reserveTasks",
        summary: "Reserve up to batch_size tasks of the job; returns at once, maybe with fewer or none",
        parameters: [jobId],
        requestBody: { required: true, content: json(ref("ReserveRequest")) },
        responses: {
          "200": { description: "The reserved tasks", content: json(ref("ReservedTasks")) },
          ...bodyErrors,
          ...jobErrors,
          ...commonErrors,
          "429": tooManyLeases,
        },
      },
    },
    "/queues/{queue}/tasks": {
      post: {
        operationId: "reserveQueueTasks",
        summary: "Reserve up to batch_size tasks from the active jobs of a queue (round robin across jobs)",
        parameters: [queueName],
        requestBody: { required: true, content: json(ref("ReserveRequest")) },
        responses: {
          "200": {
            description: "The reserved tasks (each names its job)",
            content: json(ref("ReservedTasks")),
          },
          ...bodyErrors,
          ...commonErrors,
          "429": tooManyLeases,
        },
      },
    },
    "/jobs/{id}/results": {
      post: {
        operationId: "postResults",
        summary: "Answer reserved tasks: results are stored, then the tasks acked; an error result acks too",
        description:
          "A permanent error (or the last delivery's error) is stored and counted failed (dead); another error " +
          "hands the task back after the job's backoff (`retry`). A delivery is answered once, on any API " +
          "instance, before or after a restart: the same answer posted again is not applied again (its item " +
          "says `duplicate` with the first answer's status, `pending` while a concurrent request stores it); a " +
          "different answer is refused (`conflict`, with what the first one did in `answered`). A receipt whose " +
          "lease expired is ignored (`expired`); if every item of the request expired the answer is 410 " +
          "`lease_expired`, if none was taken and one conflicts, 409 `already_answered`. An error message " +
          "longer than 256 characters is stored truncated, with a note of its length.",
        parameters: [jobId],
        requestBody: { required: true, content: json(ref("ResultsRequest")) },
        responses: {
          "200": {
            description: "What became of each item, in request order",
            content: json(ref("ResultsResponse")),
          },
          ...bodyErrors,
          "404": jobErrors["404"],
          "409": error(
            "Nothing in the request was taken and a delivery was answered before with another answer " +
              "(`already_answered`, with `results` per item): a replayed or stale receipt.",
          ),
          "410": error(
            "The job has finished (`job_finished`), or every lease of the request expired (`lease_expired`).",
          ),
          ...commonErrors,
        },
      },
    },
    "/jobs/{id}/heartbeat": {
      post: {
        operationId: "heartbeat",
        summary: "Extend the leases of tasks still being processed; returns refreshed receipts",
        parameters: [jobId],
        requestBody: { required: true, content: json(ref("HeartbeatRequest")) },
        responses: {
          "200": {
            description: "Each receipt's lease, in request order",
            content: json(ref("HeartbeatResponse")),
          },
          ...bodyErrors,
          "404": jobErrors["404"],
          "410": error("The job has finished (`job_finished`), or every lease expired (`lease_expired`)."),
          ...commonErrors,
        },
      },
    },
  },
  components: {
    securitySchemes: {
      bearer: { type: "http", scheme: "bearer", description: "A token from the service's configuration." },
    },
    schemas: {
      Error: {
        type: "object",
        required: ["error"],
        properties: {
          error: {
            type: "object",
            required: ["code", "message"],
            properties: {
              code: { type: "string" },
              message: { type: "string" },
              field: { type: "string", description: "The offending field, for invalid_request." },
            },
          },
        },
      },
      Health: {
        type: "object",
        required: ["status", "connection"],
        properties: { status: { enum: ["ok", "unavailable"] }, connection: { type: "string" } },
      },
      JobStatus: { enum: ["queuing", "running", "stalled", "succeeded", "failed"] },
      JobSummary: {
        type: "object",
        required: ["id", "queue", "status", "total", "done", "failed", "dead", "created_at", "updated_at"],
        properties: {
          id: { type: "string" },
          queue: { type: "string" },
          status: ref("JobStatus"),
          total: { type: "integer" },
          done: { type: "integer" },
          failed: { type: "integer" },
          dead: { type: "integer" },
          created_at: { type: "integer", description: "ms since the epoch" },
          updated_at: { type: "integer", description: "ms since the epoch" },
        },
      },
      Job: {
        type: "object",
        required: [
          "id",
          "queue",
          "status",
          "total",
          "done",
          "failed",
          "dead",
          "throughput",
          "eta_ms",
          "reason",
        ],
        properties: {
          id: { type: "string" },
          queue: { type: "string" },
          status: ref("JobStatus"),
          total: { type: "integer" },
          done: { type: "integer" },
          failed: { type: "integer" },
          dead: { type: "integer" },
          throughput: { type: ["number", "null"], description: "Tasks answered per second (EWMA)." },
          eta_ms: {
            type: ["integer", "null"],
            description: "Estimated time to the end; null until there is a rate.",
          },
          reason: { type: ["string", "null"] },
        },
      },
      ReserveRequest: {
        type: "object",
        required: ["batch_size"],
        additionalProperties: false,
        properties: { batch_size: { type: "integer", minimum: 1, maximum: limits.maxBatchSize } },
      },
      ReservedTasks: {
        type: "object",
        required: ["tasks"],
        properties: { tasks: { type: "array", items: ref("ReservedTask") } },
      },
      ReservedTask: {
        type: "object",
        required: ["id", "job_id", "index", "attempt", "payload", "receipt", "lease_ms"],
        properties: {
          id: { type: "string", description: "`<job_id>.<index>`, stable across deliveries" },
          job_id: { type: "string" },
          index: { type: "integer", minimum: 0 },
          attempt: { type: "integer", minimum: 1, description: "Delivery number" },
          payload: { description: "The task as submitted" },
          receipt: { type: "string", description: "Post it with the result; valid for this delivery only" },
          lease_ms: { type: "integer", description: "Post the result (or heartbeat) within this many ms" },
        },
      },
      ResultsRequest: {
        type: "object",
        required: ["results"],
        additionalProperties: false,
        properties: {
          results: {
            type: "array",
            minItems: 1,
            maxItems: limits.maxResults,
            items: { oneOf: [ref("TaskResult"), ref("TaskError")] },
          },
        },
      },
      TaskResult: {
        type: "object",
        required: ["receipt", "result"],
        additionalProperties: false,
        properties: { receipt: ref("Receipt"), result: { description: "Any JSON value (at most 256 KiB)" } },
      },
      TaskError: {
        type: "object",
        required: ["receipt", "error"],
        additionalProperties: false,
        properties: {
          receipt: ref("Receipt"),
          error: {
            type: "object",
            required: ["message"],
            additionalProperties: false,
            properties: {
              message: {
                type: "string",
                minLength: 1,
                description:
                  "Stored truncated to 256 characters, with a note of its length (the body limit bounds what is read).",
              },
              permanent: {
                type: "boolean",
                default: false,
                description: "true: never retry (counted failed); false: retried with the job's backoff",
              },
            },
          },
        },
      },
      Receipt: { type: "string", minLength: 1, maxLength: 1024 },
      ResultsResponse: {
        type: "object",
        required: ["results"],
        properties: {
          results: {
            type: "array",
            items: {
              type: "object",
              required: ["id", "status"],
              properties: {
                id: { type: "string" },
                status: {
                  enum: ["done", "failed", "dead", "retry", "expired", "pending", "conflict"],
                  description:
                    "done: result stored, task acked; failed: error stored, task terminated; dead: the last " +
                    "delivery failed; retry: handed back, offered again after retry_in_ms; expired: the lease had " +
                    "ended, nothing was done; pending: a concurrent request is storing the same answer; " +
                    "conflict: the delivery was answered before with another answer, nothing was done",
                },
                duplicate: {
                  type: "boolean",
                  description: "Answered before with the same answer: status is the first answer's",
                },
                answered: {
                  enum: ["done", "failed", "dead", "retry", "pending"],
                  description: "For conflict: what the first answer did",
                },
                retry_in_ms: { type: "integer" },
              },
            },
          },
        },
      },
      HeartbeatRequest: {
        type: "object",
        required: ["receipts"],
        additionalProperties: false,
        properties: {
          receipts: { type: "array", minItems: 1, maxItems: limits.maxResults, items: ref("Receipt") },
        },
      },
      HeartbeatResponse: {
        type: "object",
        required: ["receipts"],
        properties: {
          receipts: {
            type: "array",
            items: {
              type: "object",
              required: ["id", "status"],
              properties: {
                id: { type: "string" },
                status: {
                  enum: ["extended", "expired", "settled"],
                  description: "settled: already answered; expired: the lease had ended",
                },
                receipt: { type: "string", description: "For extended: use this receipt from now on" },
                lease_ms: { type: "integer" },
              },
            },
          },
        },
      },
    },
  },
});
