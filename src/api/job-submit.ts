import type { Broker } from "../adapters/broker.ts";
import type { RecordFound } from "../adapters/job-records.ts";
import { assertSameRequest, isLegacyJobFor, legacyJobIdFor } from "../effects/plan-submit.ts";
import { RuntimeStopped } from "../kernel/errors.ts";
import { type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import { jobStatusOf } from "../machines/job-state.ts";
import type { StartedJobActor } from "./job-actor.ts";
import type { JobHandle } from "./job-handle.ts";

/**
 * The job a submit's idempotency key already names, as `get` hands it out
 * (the job of the key's legacy id, or a job committed under the request's
 * id); undefined when there is none, or no key: a new job is submitted.
 * Throws when the key names a job of another request.
 */
export const jobOfKey = async <Result>(
  broker: Pick<Broker, "getRecord">,
  record: JobRecord,
  get: (id: string) => Promise<JobHandle<Result> | undefined>,
): Promise<JobHandle<Result> | undefined> => {
  const key = record.idempotencyKey;
  if (key !== undefined) {
    const legacy = (await broker.getRecord(legacyJobIdFor(key)))?.record;
    if (isLegacyJobFor(legacy, record)) {
      const handle = await get(legacy.id);
      if (handle) return handle;
    }
    const found = (await broker.getRecord(record.id))?.record;
    assertSameRequest(found, record);
    // Already committed: watched like any job, its answers so far replayed. A submit actor
    // would sit in `queuing` while workers answer, and miss those answers.
    if (found?.phase === SubmitPhase.committed) {
      const handle = await get(found.id);
      if (handle) return handle;
    }
  }
  return undefined;
};

/**
 * A new job's submit, as its actor settles it: resolves once committed
 * (undefined), or with the record of the job its key named, which another
 * submit committed; a submit that failed rejects with its typed error (it
 * was rolled back), one stopped first with `RuntimeStopped`.
 */
export const whenCommitted = (started: StartedJobActor): Promise<RecordFound | undefined> =>
  new Promise<RecordFound | undefined>((resolve, reject) => {
    const check = () => {
      const s = started.actor.getSnapshot();
      if (jobStatusOf(s.value) === "queuing") return false;
      const error = started.submitError();
      if (error !== undefined) reject(error);
      else resolve(undefined);
      return true;
    };
    // The key named a job another submit (maybe another runtime's) committed: supervise or
    // watch that one, as recorded, not a job of this request's tasks.
    // Never rejects: it resolves only when the key named a committed job.
    started.onExisting((found) => {
      sub.unsubscribe();
      resolve(found);
    });
    const settled = () => {
      sub.unsubscribe();
      started.onExisting(undefined);
    };
    const sub = started.actor.subscribe({
      next: () => {
        if (check()) settled();
      },
      complete: () => {
        if (!check()) reject(new RuntimeStopped({ message: "runtime stopped during submit" }));
        started.onExisting(undefined);
      },
    });
    if (check()) settled();
  });
