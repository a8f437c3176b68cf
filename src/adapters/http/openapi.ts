import { JsonSchema, Schema } from "effect";
import { subjectTokenPattern } from "../../kernel/validation.ts";
import { type BodyLimits, requestBodies, responseBodies } from "./bodies.ts";

/**
 * The OpenAPI 3.1 document of the HTTP pull API, served at `GET /openapi.json`:
 * paths, operations and security here; the bodies' schemas are generated
 * from bodies.ts, the schemas request-bodies.ts decodes with.
 */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object) => ({ "application/json": { schema } });
const error = (description: string) => ({ description, content: json(ref("Error")) });

const commonErrors = {
  "401": error("No bearer token (`missing_token`) or an unknown one (`invalid_token`)."),
  "403": error(
    "The token's role does not allow this (`forbidden`: `worker` tokens reserve, answer and heartbeat; " +
      "`read` and `operate` tokens list and show jobs), or the queue is not one of the token's (`forbidden`).",
  ),
  "503": error("NATS is unavailable or the runtime is stopping (`unavailable`); retry later."),
};
const bodyErrors = {
  "400": error(
    "Malformed JSON (`invalid_json`), a field of the wrong type or out of range (`invalid_request`, with `field`), " +
      "a receipt that was not issued by this service (`invalid_receipt`) or belongs to another job (`receipt_wrong_job`).",
  ),
  "403": error(
    "The token's role does not allow this (`forbidden`), or a receipt was leased by another worker identity " +
      "(`receipt_not_yours`): only the tokens of the identity that reserved a task may answer or heartbeat it.",
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
  schema: { type: "string", pattern: subjectTokenPattern.source },
};
const queueName = {
  name: "queue",
  in: "path",
  required: true,
  schema: { type: "string", pattern: subjectTokenPattern.source },
};

/**
 * The components, by identifier. Requests are closed (`additionalProperties:
 * false`, as the decoder refuses unknown fields); responses stay open, so a
 * field added later breaks no client that validates them.
 */
const componentSchemas = (limits: BodyLimits): JsonSchema.Definitions => {
  const definitions: Record<string, JsonSchema.JsonSchema> = {};
  const add = (schemas: readonly Schema.Top[], onExcessProperty: "error" | "ignore") => {
    for (const schema of schemas) {
      for (const [name, definition] of Object.entries(
        Schema.toJsonSchemaDocument(schema, { onExcessProperty }).definitions,
      )) {
        const known = definitions[name];
        if (known !== undefined && JSON.stringify(known) !== JSON.stringify(definition))
          throw new Error(`two body schemas are named ${name}`);
        definitions[name] = definition;
      }
    }
  };
  add(Object.values(requestBodies(limits)), "error");
  add(Object.values(responseBodies), "ignore");
  // Rewrites the `#/$defs/` references to `#/components/schemas/`.
  return JsonSchema.toMultiDocumentOpenApi3_1({ dialect: "draft-2020-12", schemas: [{}], definitions })
    .definitions;
};

export const openApiDocument = (limits: BodyLimits & { maxBodyBytes: number }) => ({
  openapi: "3.1.0",
  info: {
    title: "jetstate HTTP pull API",
    version: "1",
    description:
      "Workers that cannot reach NATS (behind a firewall) lease tasks over HTTP with the same contract as native " +
      "workers: reserve, process, post the result (stored before the task is acked), heartbeat long tasks. " +
      "Every receipt is signed and names one delivery of one task of one job and the token that reserved it; " +
      "it expires with its lease, and the answer given for a delivery is kept by the broker, so a receipt is " +
      "answered once, whichever API instance it is posted to. Tokens have a role (`worker`, `read`, or `operate`: `read` plus the dashboard's cancel and redrive) and queues. " +
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
        summary: "Jobs of the token's queues, a page at a time (a `read` token)",
        description:
          "Jobs in the order they were last written. Pass the answer's `next` as `cursor` for the page " +
          "after it; no `next`: the listing reached the end. A page reads at most 10 × `limit` stored " +
          "jobs (at least 1,000), so with a filter it may hold fewer than `limit`, or none, and still " +
          "have a `next`. A job updated while you page moves to the end: it can be listed twice, and a " +
          "job that existed throughout is never missed.",
        parameters: [
          { name: "queue", in: "query", schema: { type: "string", pattern: subjectTokenPattern.source } },
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
          {
            name: "cursor",
            in: "query",
            description: "The `next` of the page before; from the start when absent.",
            schema: { type: "string" },
          },
        ],
        responses: {
          "200": {
            description: "The jobs",
            content: json(ref("JobList")),
          },
          "400": error("A query parameter is invalid (`invalid_request`), `cursor` included."),
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
          "409": error(
            "The job's tasks are on its queue's lane (`job_in_lane`, with `queue`): reserve them from " +
              "`POST /queues/{queue}/tasks`, or submit such a job with `lane: false`.",
          ),
          ...commonErrors,
          "429": tooManyLeases,
        },
      },
    },
    "/queues/{queue}/tasks": {
      post: {
        operationId: "reserveQueueTasks",
        summary: "Reserve up to batch_size tasks from the active jobs of a queue (round robin across jobs)",
        description:
          "The only way to reserve the tasks of a job on the queue's lane (a small job may be put there " +
          "instead of getting a consumer of its own): the lane takes its turn among the queue's jobs.",
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
          "different answer is refused (`conflict`, with what the first one did in `answered`), also once the " +
          "receipt's lease expired or (every item answered before) the job ended: a POST retried after its " +
          "response was lost. A receipt whose lease expired and whose answer is not recorded (never answered, " +
          "or still `pending`) is ignored (`expired`); if every item of the request " +
          "expired the answer is 410 `lease_expired`, if none was taken and one conflicts, 409 " +
          "`already_answered`. An error message " +
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
    schemas: componentSchemas(limits),
  },
});
