import type { Broker } from "../adapters/broker.ts";
import { shownRecord } from "../effects/finalize-job.ts";
import { reapSubmits } from "../effects/reap-submits.ts";
import { inBatches } from "../kernel/batches.ts";
import { cancelledInSubmit, type FlowRecord, type ObservedJob } from "../kernel/flow-record.ts";
import { commitDeadlineBy, isFinal, type JobRecord, SubmitPhase } from "../kernel/job-record.ts";

/**
 * What the next step of a flow looks at: the job of `every` node not ended,
 * or of those being submitted (`submitting`: a sweep), and the nodes whose
 * job changed (`changed`: the last record heard of each, by node).
 */
export interface Looks {
  every: boolean;
  submitting: boolean;
  /** The nodes being submitted and those running (a cancelled flow's sweep). */
  running: boolean;
  readonly changed: Map<string, JobRecord>;
}

/** What a wake asks the step to look at (`wake`). */
export type Look = "every" | "submitting" | "running" | { readonly name: string; readonly record: JobRecord };

/** `looks` (none yet: a new one) with `look` added. */
export const withLook = (looks: Looks | undefined, look: Look): Looks => {
  const next = looks ?? { every: false, submitting: false, running: false, changed: new Map() };
  if (look === "every") next.every = true;
  else if (look === "submitting") next.submitting = true;
  else if (look === "running") next.running = true;
  else next.changed.set(look.name, look.record);
  return next;
};

/** A look at every node not ended. */
export const everyLook = (): Looks => ({
  every: true,
  submitting: false,
  running: false,
  changed: new Map(),
});

import type { Logger } from "../kernel/logger.ts";

/** A grace that makes every submit past its deadline: `reapSubmits` finishes a dead one at once. */
const anyDeadline = Number.NEGATIVE_INFINITY;

/** What a driver's look at a node's job needs. */
export interface Observer {
  readonly broker: Broker;
  readonly log: Logger;
  readonly now: () => number;
  /** The reaper's grace past a submit's commit deadline (`jobs.reapGraceMs`). */
  readonly graceMs: number;
  /** How far `now` is ahead of the server's clock (`aheadOfServer`): a submit's deadline is judged by the server's stamps. */
  readonly aheadMs: () => number | undefined;
}

/** How a node's job looks from its record: none (or rolled back), being submitted, running, ended. */
const observe = (found: JobRecord | undefined): ObservedJob => {
  if (found === undefined || found.phase === SubmitPhase.rolledBack) return { kind: "none" };
  if (isFinal(found.status))
    return {
      kind: "ended",
      status: found.status as "succeeded" | "failed",
      ...(found.reason ? { reason: found.reason } : {}),
    };
  return found.phase === SubmitPhase.submitting ? { kind: "pending" } : { kind: "running" };
};

/**
 * How a node's job looks now, read. A submit still under way past its commit
 * deadline and the reaper's grace died (its submitter checks that deadline
 * before it commits, and would have rolled back by then): it is finished
 * here, as the reaper would finish it (rolled forward if it committed,
 * else rolled back), then read again. The reaper runs only on a runtime
 * with the admin role; without this, a flow whose driver died inside a
 * node's submit waited for one, for ever if there was none. A node whose
 * submit was rolled back is submitted again by the step (a submit takes
 * over a rolled-back record of its key).
 *
 * In a cancelled flow (`flowCancelled`) the deadline is not waited for
 * once the submit's lease has run out: its submitter's runtime stopped
 * renewing it (it died), the proof a takeover acts on. A cancel waited
 * for the deadline and the grace, 40 s, before it resolved (review
 * finding). A submit whose lease is still renewed, or not written yet, is
 * alive: its commit (or its own rollback) wakes the flow.
 *
 * A submit rolled back here loses its lease too, as the reaper's pass
 * removes it: left, it kept the rolled-back job in the leases bucket (the
 * index of the jobs not over: the dashboard listed it, each HTTP listing
 * read its record) until a takeover pass of a supervisor removed it, for
 * ever without one. Only the lease read before the rollback and run out
 * then (its holder's heartbeat too), up to that revision: a lease another
 * runtime holds or took since (a resubmit of the key) stays.
 */
export const observeJob = async (
  o: Observer,
  jobId: string,
  flowCancelled: boolean,
): Promise<ObservedJob> => {
  const found = await shownRecord(o.broker, jobId);
  const shown = found?.record;
  if (found === undefined || shown?.phase !== SubmitPhase.submitting) return observe(shown);
  // By the server's stamp of the record: by its own, a submitter ahead that died held the node.
  // A runtime that never listed the leases (the submitter role alone) reads the server's clock
  // first: its own taken for it, a sweeper ahead rolled back a live submit.
  await o.broker.leases.readServerTime();
  const pastDeadline = o.now() >= commitDeadlineBy(found, o.aheadMs()) + o.graceMs;
  if (!pastDeadline && !flowCancelled) return observe(shown);
  const lease = await o.broker.leases.get(jobId, o.now());
  const runOut = lease !== undefined && lease.lease.until <= o.now();
  if (!pastDeadline && !runOut) return observe(shown);
  // Not past its deadline: finished whatever the deadline says (its submitter is gone).
  const finished = await reapSubmits(o.broker, o.now, pastDeadline ? o.graceMs : anyDeadline, o.aheadMs, [
    found,
  ]);
  if (finished.rolledBack.length > 0) {
    if (runOut)
      await o.broker.leases
        .remove(jobId, lease.revision)
        .catch((error: unknown) =>
          o.log.debug(
            { jobId, err: error },
            "lease of a rolled-back submit not removed; a takeover pass does",
          ),
        );
    o.log.info(
      { jobId },
      flowCancelled
        ? "a node's submit that died before its commit was rolled back; its flow was cancelled"
        : "a node's submit that died before its commit was rolled back; submitted again",
    );
  }
  return observe((await shownRecord(o.broker, jobId))?.record);
};

/**
 * How a node's job looks from the record its change carried (the record
 * watch's): as it says, without a read. Read instead when it is another job
 * than the node's (another flow of the id), and when it is still being
 * submitted in a cancelled flow (a lane job committed by its stored task
 * runs, and is cancelled) or past its commit deadline (a dead submit is
 * finished). A submit under way in a flow running is pending: its commit,
 * or its job's end, is a change of its own, and the sweep reads the nodes
 * still being submitted.
 */
export const observeChange = (
  o: Observer,
  jobId: string,
  record: JobRecord,
  flowCancelled: boolean,
): Promise<ObservedJob> | ObservedJob => {
  if (record.id !== jobId) return observeJob(o, jobId, flowCancelled);
  if (record.phase !== SubmitPhase.submitting) return observe(record);
  // A change carries no server stamp: its deadline as written only says when to read it. One a
  // submitter ahead wrote reads as alive here: the sweep's read of the nodes being submitted
  // judges it by the server's stamp (`observeJob`).
  const alive = !flowCancelled && o.now() < record.commitDeadline + o.graceMs;
  return alive ? observe(record) : observeJob(o, jobId, flowCancelled);
};

/**
 * The jobs of a cancelled flow's nodes that run though the cancel wrote
 * them cancelled: their submit landed after it, and the driver that made
 * it stopped before it cancelled them. A flow woken by such a job's
 * record (every runtime is) cancels it here. A submit still under way is
 * left to the next wake (its commit's). Only the nodes that were being
 * submitted at the cancel are looked at, and of a wake by job changes
 * (`changed`, by node) only those changed, from the records the changes
 * carried: a wake of a big cancelled flow, one per job it cancels, reads
 * no other node's job.
 */
export const landedAfterCancel = async (
  o: Observer,
  record: FlowRecord,
  changed?: ReadonlyMap<string, JobRecord>,
): Promise<string[]> => {
  if (record.status !== "cancelled") return [];
  const names = changed ? [...changed.keys()] : Object.keys(record.nodes);
  // 32 at once: a cancel that stopped its driver's submits leaves hundreds of such nodes.
  const running = await inBatches(names, async (name) => {
    const node = record.nodes[name];
    // Only a node cancelled while its job was being submitted may have one landing after.
    if (node?.status !== "cancelled" || node.reason !== cancelledInSubmit) return undefined;
    const job = changed?.get(name);
    const seen = await (job ? observeChange(o, node.jobId, job, true) : observeJob(o, node.jobId, true));
    return seen.kind === "running" ? node.jobId : undefined;
  });
  return running.filter((id): id is string => id !== undefined);
};
