import type { Broker } from "../adapters/broker.ts";
import type { ScheduleStore, StoredSchedule } from "../adapters/schedule-store.ts";
import { jobIdFor } from "../effects/plan-submit.ts";
import { reapSubmits, rollLaneForward } from "../effects/reap-submits.ts";
import { InvalidArgument, RevisionConflict } from "../kernel/errors.ts";
import { commitDeadlineBy, SubmitPhase } from "../kernel/job-record.ts";
import { childLogger } from "../kernel/logger.ts";
import { type ScheduleRecord, sameRule } from "../kernel/schedule-record.ts";
import type { JobRegistry } from "./jobs.ts";
import { requireRole } from "./permissions.ts";
import type { RuntimeCore } from "./runtime-core.ts";
import { ScheduleClock } from "./schedule-clock.ts";
import { checkScheduleRequest, nextTick, type ScheduleRequest } from "./schedule-rule.ts";
import { Scheduler } from "./scheduler.ts";

export type { ScheduleRequest } from "./schedule-rule.ts";

/** A schedule as `rt.schedules` shows it: the stored record and its next tick. */
export interface ScheduleInfo extends ScheduleRecord {
  /** The next tick after now and after the last fired (epoch ms); absent if the rule never ticks again. */
  readonly nextTick?: number;
}

/** `rt.schedules`: recurring jobs, fired once per tick by the runtimes with the submitter role. */
export interface Schedules {
  /**
   * Creates or replaces a schedule (checked first as `rt.jobs.submit` checks
   * a job: a bad one is an `InvalidArgument` naming the field, and nothing is
   * stored). A new rule takes effect from its next tick; replacing only the
   * job or the policy keeps the ticks as they were.
   * @example
   * await rt.schedules.upsert({ id: "nightly", cron: "0 3 * * *", timezone: "Europe/Berlin",
   *   job: { queue: "reports", tasks: [{ kind: "daily" }] } });
   */
  upsert(request: ScheduleRequest): Promise<ScheduleInfo>;
  /** The schedule with this id; undefined if there is none. */
  get(id: string): Promise<ScheduleInfo | undefined>;
  /** Every schedule. */
  list(): Promise<ScheduleInfo[]>;
  /** Removes the schedule: no tick of it fires after every runtime's next pass. False if there was none. */
  remove(id: string): Promise<boolean>;
}

/** How often an upsert re-reads and writes again after losing a compare-and-set race. */
const upsertAttempts = 5;

/**
 * The record and its next tick, by the scheduler's time (`now`) and the `lastTick` as the server's
 * stamp of its entry bears it out: by the runtime's clock and the stored `lastTick`, a runtime
 * ahead, or any after a `lastTick` written ahead, showed a next tick that far on while it fired now.
 */
const infoOf = (stored: StoredSchedule, time: ScheduleClock, now: number): ScheduleInfo => {
  const { record } = stored;
  const { lastTick } = time.trusted(stored);
  const next = nextTick(record.rule, Math.max(now, lastTick ?? now));
  return next === undefined ? record : { ...record, nextTick: next };
};

const checkId = (id: unknown): string => {
  if (typeof id !== "string" || id === "" || id.length > 128 || !/^[-=\w]+(?:\.[-=\w]+)*$/.test(id))
    throw new InvalidArgument({
      field: "id",
      message: "id: must be a schedule id (1–128 of A–Z a–z 0–9 _ - = .)",
    });
  return id;
};

/**
 * Fires one tick: submits its job with the tick's key, unless it is
 * committed already (another runtime fired it): then nothing is submitted
 * and no actor starts. A lane job whose commit is not written yet (its
 * record says `submitting` until its next write, a second on) is committed
 * once its task is stored (`rollLaneForward`), and its commit is written
 * here, as a submit of the key writes it: its submitter, whose publish may
 * have been stored with its answer lost, would roll the job back while a
 * worker runs its task, and this runtime would have moved `lastTick` past
 * the tick. Every runtime's scheduler fires every tick: each submitted
 * such a tick again, which started an actor watching the job.
 */
export const fireTick = async (
  broker: Broker,
  jobs: Pick<JobRegistry, "submit">,
  record: ScheduleRecord,
  key: string,
  now: () => number,
  reapGraceMs: number,
  aheadMs: () => number | undefined,
): Promise<void> => {
  const stored = await broker.getRecord(jobIdFor(record.job.queue, key));
  if (stored?.record.phase === SubmitPhase.committed) return;
  // Not written (no task stored, or the record changed since: its commit, its rollback): the
  // submit reads it again, and waits for a submit still under way.
  if (stored && (await rollLaneForward(broker, stored, now))) return;
  // A submit of the tick that died before its commit, past its deadline and the reaper's grace:
  // finished here, as the reaper would, not waited for. With no admin runtime (no reaper), the
  // submit waited for it, gave up, and the tick never fired. Its deadline is judged by the
  // server's clock (`commitDeadlineBy`): by its stamp, a submitter ten minutes ahead that died
  // held the tick back ten minutes.
  if (
    stored?.record.phase === SubmitPhase.submitting &&
    now() >= commitDeadlineBy(stored, aheadMs()) + reapGraceMs
  )
    await reapSubmits(broker, now, reapGraceMs, aheadMs, [stored]);
  await jobs.submit({ ...record.job, idempotencyKey: key });
};

/**
 * `rt.schedules` and, when this runtime submits (and `jobs.scheduler` is on),
 * its scheduler loop in the runtime's loop group: it fires each tick by
 * submitting the schedule's job with the tick's idempotency key.
 */
export const createSchedules = (
  core: RuntimeCore,
  broker: Broker,
  store: ScheduleStore,
  jobs: JobRegistry,
): Schedules => {
  const roles = core.options.roles;
  const log = childLogger(core.logger, { actor: "scheduler" });
  // The scheduler's time and its trust in a record's times, shared with what `rt.schedules` shows.
  const time = new ScheduleClock(core.clock, store, log);
  const scheduler =
    roles.has("submitter") && core.options.jobs.scheduler
      ? new Scheduler({
          store,
          clock: core.clock,
          log,
          time,
          track: (name, work) => core.loops.track(name, work),
          // A stuck submit of the tick is judged by the scheduler's time (`now`: the server's when
          // this runtime's clock is ahead): by a clock ahead, a live submit was past its deadline.
          // Its deadline is counted from the server's stamp of its record, moved to that time.
          fire: (record, _tick, key, now) =>
            fireTick(broker, jobs, record, key, now, core.options.jobs.reapGraceMs, () =>
              time.read() ? time.aheadOfServer() : undefined,
            ),
        })
      : undefined;
  if (scheduler) core.loops.run("scheduler", (signal) => scheduler.run(signal));
  const need = (call: string) => requireRole(roles, "submitter", call);
  return {
    upsert: async (request) => {
      need("rt.schedules.upsert()");
      const now = core.clock.now();
      const checked = await checkScheduleRequest(request, await broker.maxPayload(), now);
      for (let attempt = 1; ; attempt++) {
        const stored = await store.read(checked.id);
        // The scheduler's time: by the server's clock when this runtime's is ahead of it.
        const at = time.now();
        const record: ScheduleRecord = stored
          ? {
              ...stored.record,
              ...checked,
              // A new rule starts anew; so does a job moved to another queue: a tick's job id is per
              // queue, and a tick being fired on the old one would be fired again on the new one.
              since:
                sameRule(stored.record.rule, checked.rule) && stored.record.job.queue === checked.job.queue
                  ? stored.record.since
                  : at,
              updatedAt: at,
            }
          : { v: 1, ...checked, since: at, createdAt: at, updatedAt: at };
        try {
          const revision = stored ? await store.update(record, stored.revision) : await store.create(record);
          scheduler?.poke();
          if (time.read()) return infoOf({ record, revision }, time, at);
          // No reading of the server's clock yet (NATS: no listing has read it; none of an empty
          // bucket): the server's stamp of this write is one. A since stamped ahead of it is taken
          // as the stamp by every reader; the next tick is shown from it.
          // Best effort: the write is made, and a failed read-back must not say it was not (a
          // review: the upsert rejected, its schedule stored and firing).
          const written = await store.read(record.id).catch(() => undefined);
          return written?.revision === revision && written.storedAt !== undefined
            ? infoOf(written, time, Math.min(at, written.storedAt))
            : infoOf({ record, revision }, time, at);
        } catch (error) {
          if (!(error instanceof RevisionConflict) || attempt >= upsertAttempts) throw error;
        }
      }
    },
    get: async (id) => {
      need("rt.schedules.get()");
      const stored = await store.read(checkId(id));
      return stored && infoOf(stored, time, time.now());
    },
    list: async () => {
      need("rt.schedules.list()");
      const listed = await store.list();
      // After the listing: on NATS, it read the server's clock.
      const now = time.now();
      return listed.map((s) => infoOf(s, time, now)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    },
    remove: async (id) => {
      need("rt.schedules.remove()");
      checkId(id);
      for (let attempt = 1; ; attempt++) {
        try {
          const removed = await store.remove(id);
          scheduler?.poke();
          return removed;
        } catch (error) {
          // A scheduler moved its lastTick between the read and the delete: read it again.
          if (!(error instanceof RevisionConflict) || attempt >= upsertAttempts) throw error;
        }
      }
    },
  };
};
