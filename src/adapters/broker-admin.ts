export interface CleanupOptions {
  /** Only report what would be removed (default false). */
  readonly dryRun?: boolean;
  /** Finished jobs older than this lose their record, results and dead letters, settled flows their record (default: the runtime's retention). */
  readonly retentionMs?: number;
}

export interface CleanupReport {
  readonly dryRun: boolean;
  /** Job consumers of finished or unknown jobs. */
  readonly consumersDeleted: string[];
  /**
   * Task subjects of finished or unknown jobs that still held messages: on
   * their queue's tasks stream, and their held tasks on its delayed stream
   * (`<prefix>.delayed.<queue>.<jobId>`), left by an end whose removal failed.
   */
  readonly tasksPurged: string[];
  /** Finished jobs past the retention period: record, results and dead letters removed. */
  readonly recordsRemoved: string[];
  /**
   * Results subjects of jobs that have no record, or whose record expired:
   * their messages deleted one by one (never a filtered purge, which made
   * the queue's results feed skip what it had not read yet).
   */
  readonly resultsPurged: string[];
  /** Supervision leases of finished or unknown jobs. */
  readonly leasesRemoved: string[];
  /**
   * Jobs not over that had no supervision lease (a record written by 0.2,
   * or a submit that lost its lease to a race): given a run-out one, so
   * takeover and the reaper, which look at the leases only, find them.
   */
  readonly leasesAdded: string[];
  /** Settled flows past the retention period: their records removed (`rt.flows.get()` no longer finds them). */
  readonly flowsRemoved: string[];
}

/** One queue's backlog, as `createMetrics` reads it at scrape time. */
export interface QueueStats {
  readonly queue: string;
  /**
   * Tasks stored and never delivered yet, over the queue's job consumers and
   * its lane (JetStream's `num_pending`). A task released for another try is
   * not counted, nor the tasks of a submit not committed yet.
   */
  readonly waiting: number;
  /** When the oldest of them was stored (ms since epoch, the broker's clock); undefined when none waits. */
  readonly oldestWaitingAt: number | undefined;
}

export interface QueueStatsQuery {
  /** These queues (each reported, with 0 when nothing waits); default: every queue the broker holds tasks streams or consumers for. */
  readonly queues?: readonly string[];
  /** The whole read's deadline: a scrape must not hang on a slow server. */
  readonly timeoutMs: number;
}

/** What the runtime hands its broker's cleanup besides the user's options. */
export interface BrokerCleanupOptions extends CleanupOptions {
  readonly retentionMs: number;
  readonly now?: number;
  /** Flows not settled: their nodes' jobs are kept past retention (`planCleanup`). */
  readonly liveFlows?: ReadonlySet<string>;
}

/** The broker's part of a cleanup pass: the jobs' (the flows' is the runtime's, `api/cleanup.ts`). */
export type JobsCleanupReport = Omit<CleanupReport, "flowsRemoved">;

/** `rt.admin`'s side of the broker: what must exist before anyone runs, and what is left after. */
export interface BrokerAdmin {
  cleanup(options: BrokerCleanupOptions): Promise<JobsCleanupReport>;

  /** Creates the shared streams and buckets, and those of `queues`, unless they exist. */
  provision(queues: readonly string[]): Promise<void>;

  /** Each queue's waiting tasks and the age of the oldest, read once within `timeoutMs` (no retry). */
  queueStats(query: QueueStatsQuery): Promise<QueueStats[]>;
}
