/**
 * Names of everything jetstate keeps, from the runtime's prefix. The NATS
 * broker creates these streams, subjects and buckets; the memory broker uses
 * the same subject names, so reports (cleanup) read the same on both.
 *
 * Everything that carries a job's tasks, results, progress or dead letters
 * names the job's queue, and each queue has streams of its own: NATS
 * permissions match whole subject tokens only, and a pull or an ack names
 * the stream (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`,
 * `$JS.ACK.<stream>.…`), so a user can be allowed one queue's work and
 * denied another's only when the queue is in the stream's name and in every
 * subject.
 */
export const brokerNames = (prefix: string) => ({
  /** One work-queue stream per queue, holding only that queue's open tasks. */
  tasksStream: (queue: string) => `${prefix}_tasks_${queue}`,
  /** What every queue's tasks stream name starts with (cleanup lists them). */
  tasksStreamPrefix: `${prefix}_tasks_`,
  tasksStreamSubjects: (queue: string) => [`${prefix}.tasks.${queue}.>`],
  tasksSubject: (queue: string, jobId: string) => `${prefix}.tasks.${queue}.${jobId}`,
  /**
   * A lane job's task: one token more than a job's own subject, so the
   * lane's filter (`laneFilter`) never overlaps a job consumer's (a job id is
   * one token, and never `lane`: ids start with `j` or `k`).
   */
  laneSubject: (queue: string, jobId: string) => `${prefix}.tasks.${queue}.lane.${jobId}`,
  laneFilter: (queue: string) => `${prefix}.tasks.${queue}.lane.>`,
  resultsStream: `${prefix}_results`,
  resultsSubject: (queue: string, jobId: string) => `${prefix}.results.${queue}.${jobId}`,
  jobsBucket: `${prefix}_jobs`,
  jobCreatedSubject: (queue: string) => `${prefix}.events.job.created.${queue}`,
  /** Core NATS, not a stream: progress notes are best effort and never stored. */
  progressSubject: (queue: string, jobId: string) => `${prefix}.progress.${queue}.${jobId}`,
  /** Core NATS, not a stream: notes between the HTTP API's instances about a queue's leases. */
  leaseNotesSubject: (queue: string) => `${prefix}.leasenotes.${queue}`,
  deadStream: `${prefix}_dead`,
  deadSubject: (queue: string, jobId: string) => `${prefix}.dead.${queue}.${jobId}`,
  /** One work-queue stream per queue, capturing the MAX_DELIVERIES advisories of its tasks stream. */
  advisoriesStream: (queue: string) => `${prefix}_advisories_${queue}`,
  /** What every queue's advisories stream name starts with (dead-letter processing finds queues by it). */
  advisoriesStreamPrefix: `${prefix}_advisories_`,
  /** MAX_DELIVERIES advisories of every job consumer on the queue's tasks stream. */
  maxDeliveriesSubject: (queue: string) =>
    `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${prefix}_tasks_${queue}.*`,
  leasesBucket: `${prefix}_leases`,
  /** The answer given for each delivery leased through the HTTP API. */
  answersBucket: `${prefix}_answers`,
  /** Live workers' announcements (`rt.workers.list()`). */
  presenceBucket: `${prefix}_presence`,
  /**
   * The queue's tasks held until due (work-queue retention), a stream per
   * queue as the tasks are: a user allowed queue A only reads and pulls A's.
   */
  delayedStream: (queue: string) => `${prefix}_delayed_${queue}`,
  /** What every queue's delayed stream name starts with (cleanup lists them). */
  delayedStreamPrefix: `${prefix}_delayed_`,
  delayedSubject: (queue: string, jobId: string) => `${prefix}.delayed.${queue}.${jobId}`,
  /** Each queue's controls (`rt.queues`): one key per queue, its settings. */
  queuesBucket: `${prefix}_queues`,
  /** A work-queue stream of permits: each queue's concurrency and rate pools, one subject each. */
  permitsStream: `${prefix}_permits`,
  permitsSubject: (queue: string, kind: "concurrency" | "rate") => `${prefix}.permits.${queue}.${kind}`,
  /**
   * A queue's pools per agent target (work-queue retention), a stream per
   * queue so that a worker's permissions reach its queue's pools only: one
   * subject per target (its hash), round of the limit and kind.
   */
  targetPermitsStream: (queue: string) => `${prefix}_tpermits_${queue}`,
  targetPermitsSubject: (queue: string, target: string, round: string, kind: "concurrency" | "rate") =>
    `${prefix}.tpermits.${queue}.${target}.${round}.${kind}`,
  /** Flow records (`rt.flows`), key = flow id. */
  flowsBucket: `${prefix}_flows`,
  /** Recurring jobs (`rt.schedules`), one key per schedule id. */
  schedulesBucket: `${prefix}_schedules`,
});
export type BrokerNames = ReturnType<typeof brokerNames>;

/** The one durable consumer of each queue's delayed stream, pulled by the movers following the queue. */
export const dueConsumer = "due";

/** The durable consumer on each queue's tasks stream that serves every lane job of the queue. */
export const laneConsumer = "lane";

/** The durable consumer that hands out a queue's permits of one kind (a name has no dot). */
export const permitsConsumer = (queue: string, kind: "concurrency" | "rate"): string => `${kind}_${queue}`;

/** The durable consumer of one target's pool, on its queue's target permits stream (`target`: the target's hash). */
export const targetPermitsConsumer = (target: string, round: string, kind: "concurrency" | "rate"): string =>
  `${kind}_${target}_${round}`;

/** Where a job's tasks are published: its own subject, or the queue's lane. */
export const taskSubjectOf = (names: BrokerNames, job: { queue: string; id: string; lane?: true }): string =>
  job.lane ? names.laneSubject(job.queue, job.id) : names.tasksSubject(job.queue, job.id);

/** The queue a stream belongs to, from its name (`<namePrefix><queue>`); undefined for any other stream. */
export const queueOfStream = (streamName: string, namePrefix: string): string | undefined =>
  streamName.startsWith(namePrefix) && streamName.length > namePrefix.length
    ? streamName.slice(namePrefix.length)
    : undefined;
