import { setTimeout as sleep } from "node:timers/promises";
import { brokerNames, dueConsumer, laneConsumer, permitsConsumer } from "../adapters/names.ts";
import type { NatsContext } from "../adapters/nats/nats-context.ts";
import {
  type ConsumerRef,
  consumerKey,
  readAnyMessage,
  readBucketValues,
  readConsumers,
  readSubjectCounts,
  type SubjectCounts,
} from "../adapters/nats/queue-facts.ts";
import { deadLettersConsumer } from "../adapters/nats/queue-streams.ts";
import type { StreamFacts } from "../adapters/nats/server-facts.ts";
import { answerMemoryMs } from "../adapters/nats/task-leasing.ts";
import { inBatches } from "../kernel/batches.ts";
import { decodeQueueSettings, type QueueSettings } from "../kernel/queue-settings.ts";
import type { Problem } from "./diagnosis.ts";
import { limitOf, poolKinds } from "./queues.ts";

/** A store row to show: made on first use when `firstUse` is given. */
interface Row {
  readonly name: string;
  readonly queue?: string;
  readonly firstUse?: string;
}

/** What the queues' own resources add to a diagnosis. */
export interface QueueChecks {
  readonly rows: readonly Row[];
  /**
   * Stores made on first use that are in use (the queues' settings name a
   * limit that needs them), with what remakes one: missing, a problem.
   */
  readonly needed: ReadonlyMap<string, string>;
  readonly problems: readonly Problem[];
}

/** The call that writes the queue's limits again: its pools, their consumers and streams made afresh. */
const configureAgain = (s: QueueSettings): string => {
  const limits = {
    ...(s.maxConcurrency === undefined ? {} : { maxConcurrency: s.maxConcurrency }),
    ...(s.ratePerSecond === undefined ? {} : { ratePerSecond: s.ratePerSecond }),
    ...(s.permitLeaseMs === undefined ? {} : { permitLeaseMs: s.permitLeaseMs }),
  };
  return `rt.queues.configure("${s.queue}", ${JSON.stringify(limits)}) (or jetstate-jobs queues configure) with an admin's credentials: its pools are made again`;
};

/**
 * The resources of the queues beyond their tasks and advisories streams,
 * for an identity that lists streams (an admin; others may not read them):
 * the answers bucket of the HTTP API, each found queue's `dead-letters`
 * consumer (made with its advisories stream), its `lane` consumer when lane
 * tasks wait on its tasks stream (one message read), its delayed stream and that stream's
 * `due` consumer, and for each queue whose settings name limits, the
 * permits stream, its pools (a subject each, as many messages as the limit:
 * a permit is never acked, held or not) and their consumers, and the
 * per-target permits stream. A call or a pass per queue, never per job: so
 * a delayed stream missing stays "not in use yet" (which jobs hold tasks is
 * in their records), and per-target pools (one per agent target, filled by
 * their first taker) are not looked at.
 */
export const checkQueues = async (
  core: NatsContext,
  found: ReadonlyMap<string, StreamFacts>,
  queues: readonly string[],
): Promise<QueueChecks> => {
  const n = brokerNames(core.options.prefix);
  const problems: Problem[] = [];
  const needed = new Map<string, string>();
  const answers = `KV_${n.answersBucket}`;
  const rows: Row[] = [
    { name: answers, firstUse: "the HTTP API's first answer to a leased task, or rt.admin.provision()" },
    { name: n.permitsStream, firstUse: "rt.queues.configure() with a limit, or rt.admin.provision()" },
  ];

  const kept = found.get(answers)?.maxAgeMs ?? 0;
  if (kept > 0 && kept < answerMemoryMs)
    problems.push({
      what: `stream ${answers} keeps an answer ${kept / 1000} s, the HTTP API relies on ${answerMemoryMs / 3_600_000} h: an answer to a task leased before can be given again`,
      fix: `nats stream edit ${answers} --max-age ${answerMemoryMs / 3_600_000}h`,
    });

  // The consumers each queue's setup or first use makes, and what is lost while one is missing.
  const setUp: Array<ConsumerRef & { lost: string; fix: string }> = [];
  const provision = (queue: string) => `run \`rt.admin.provision(["${queue}"])\` with an admin's credentials`;
  // The lane's consumer is made by the queue's first lane job: lane tasks waiting say it is in use.
  const withTasks = queues.filter((q) => found.has(n.tasksStream(q)));
  const laneWaits = await inBatches(
    withTasks,
    async (q) => (await readAnyMessage(core, n.tasksStream(q), n.laneFilter(q))) === true,
  );
  const laneInUse = new Set(withTasks.filter((_, i) => laneWaits[i]));
  for (const queue of queues) {
    if (found.has(n.advisoriesStream(queue)))
      setUp.push({
        stream: n.advisoriesStream(queue),
        name: deadLettersConsumer,
        lost: "the queue's tasks that run out of deliveries never become dead letters (their jobs never end)",
        fix: provision(queue),
      });
    if (laneInUse.has(queue))
      setUp.push({
        stream: n.tasksStream(queue),
        name: laneConsumer,
        lost: "the queue's lane tasks waiting there are delivered to no worker",
        fix: `submit a lane job to the queue (\`rt.jobs.submit({ queue: "${queue}", lane: true, … })\`) from a runtime that may create consumers: it makes the lane again`,
      });
    const name = n.delayedStream(queue);
    rows.push({
      name,
      queue,
      firstUse: "a job of the queue with a delay (delayMs, runAt), or rt.admin.provision([queue])",
    });
    const s = found.get(name);
    if (s === undefined) continue;
    setUp.push({
      stream: name,
      name: dueConsumer,
      lost: "the queue's held tasks are not moved when due",
      fix: provision(queue),
    });
    // Moved tasks are acked: kept, a job's held count (its stall check) never falls to none.
    if (s.retention !== "workqueue")
      problems.push({
        what: `stream ${name} has ${s.retention} retention, work-queue wanted: a task moved when due still counts as held`,
        fix: `remove it (nats stream rm ${name}; the tasks it holds are lost) and ${provision(queue)}`,
      });
  }

  const records = found.has(`KV_${n.queuesBucket}`)
    ? await readBucketValues(core, n.queuesBucket)
    : new Map<string, string>();
  const settings = [...records].map(([q, v]) => decodeQueueSettings(q, v).settings);
  const pools = settings.flatMap((s) =>
    poolKinds.flatMap((kind) => {
      const limit = s[limitOf[kind]];
      return limit === undefined ? [] : [{ settings: s, kind, limit }];
    }),
  );
  for (const s of settings)
    if (s.perTarget !== undefined)
      needed.set(
        n.targetPermitsStream(s.queue),
        `lift the per-target limits and set them again (\`rt.queues.configure("${s.queue}", { perTarget: null })\`, then with them) with an admin's credentials`,
      );
  rows.push(
    ...settings
      .filter((s) => s.perTarget)
      .map((s) => ({ name: n.targetPermitsStream(s.queue), queue: s.queue })),
  );
  if (pools.length > 0)
    needed.set(n.permitsStream, [...new Set(pools.map((p) => configureAgain(p.settings)))].join("; "));

  const permitted = found.has(n.permitsStream) ? pools : [];
  const consumers = await readConsumers(core, [
    ...setUp,
    ...permitted.map((p) => ({ stream: n.permitsStream, name: permitsConsumer(p.settings.queue, p.kind) })),
  ]);
  for (const c of setUp)
    if (consumers.get(consumerKey(c)) === null)
      problems.push({
        what: `consumer ${c.name} of stream ${c.stream} is missing: ${c.lost}`,
        fix: c.fix,
      });
  if (permitted.length === 0) return { rows, needed, problems };

  const short = await poolsOffTheirLimit(core, records, permitted);
  for (const { settings: s, kind, limit } of permitted) {
    const name = permitsConsumer(s.queue, kind);
    const consumer = consumers.get(consumerKey({ stream: n.permitsStream, name }));
    if (consumer === null)
      problems.push({
        what: `consumer ${name} of stream ${n.permitsStream} is missing: queue ${s.queue}'s ${kind} pool hands out no permit`,
        fix: configureAgain(s),
      });
    else if (consumer !== undefined && consumer.maxDeliver !== -1)
      problems.push({
        what: `consumer ${name} of stream ${n.permitsStream} delivers a permit at most ${consumer.maxDeliver} times: queue ${s.queue}'s ${kind} pool runs dry`,
        fix: `nats consumer rm ${n.permitsStream} ${name}, then ${configureAgain(s)}`,
      });
    const subject = n.permitsSubject(s.queue, kind);
    const count = short.get(subject);
    if (count !== undefined)
      problems.push({
        what: `pool ${subject} of stream ${n.permitsStream} holds ${count} permit(s), queue ${s.queue}'s ${limitOf[kind]} is ${limit}`,
        fix: configureAgain(s),
      });
  }
  return { rows, needed, problems };
};

/** How long a pool's stream must stay unwritten for a count off its limit to be a problem. */
const settleMs = 1000;

/**
 * The pools holding other than their limit's count of permits, by subject, with that count.
 * `configure()` rewrites a pool (purge, then one permit after another; every instance of a
 * service re-applies its limit at its start, so a rolling deploy rewrites while a deploy gate
 * runs doctor), and a read in between counts it half full: a health check must not page on
 * that. So a count off is looked at again `settleMs` later, and a problem only when its count
 * is the same (a rewrite publishes without a pause) and the queue's settings record is the one
 * read before (a configure writes its record first, so a new limit read after its pool is not
 * taken for the old one's). Not "nothing written to the permits stream between the looks": it
 * holds every queue's pools, and another queue's limit re-applied every 200 ms hid a pool left
 * empty for good. A pool a crash left short stays so on both looks; one whose rewrite stalls
 * for longer (a lost answer it waits out) reads as a problem until it resumes: run doctor again.
 */
const poolsOffTheirLimit = async (
  core: NatsContext,
  records: ReadonlyMap<string, string>,
  pools: readonly { settings: QueueSettings; kind: (typeof poolKinds)[number]; limit: number }[],
): Promise<ReadonlyMap<string, number>> => {
  const n = brokerNames(core.options.prefix);
  const read = () => readSubjectCounts(core, n.permitsStream, `${core.options.prefix}.permits.>`);
  const off = (held: SubjectCounts | undefined) =>
    held === undefined
      ? []
      : pools.flatMap((p) => {
          const subject = n.permitsSubject(p.settings.queue, p.kind);
          const count = held.counts.get(subject) ?? 0;
          return count === p.limit ? [] : [{ queue: p.settings.queue, subject, count }];
        });
  const first = await read();
  const seen = off(first);
  if (seen.length === 0) return new Map();
  await sleep(settleMs, undefined, { signal: core.stopping });
  const again = await read();
  const recordsAgain = await readBucketValues(core, n.queuesBucket);
  const still = new Map(off(again).map((p) => [p.subject, p.count]));
  return new Map(
    seen
      .filter((p) => still.get(p.subject) === p.count && recordsAgain.get(p.queue) === records.get(p.queue))
      .map((p) => [p.subject, p.count]),
  );
};
