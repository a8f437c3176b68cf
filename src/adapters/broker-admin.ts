export interface CleanupOptions {
  /** Only report what would be removed (default false). */
  readonly dryRun?: boolean;
  /** Finished jobs older than this lose their record, results and dead letters (default: the runtime's retention). */
  readonly retentionMs?: number;
}

export interface CleanupReport {
  readonly dryRun: boolean;
  /** Job consumers of finished or unknown jobs. */
  readonly consumersDeleted: string[];
  /** Task subjects of finished or unknown jobs that still held messages. */
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
}

/** `rt.admin`'s side of the broker: what must exist before anyone runs, and what is left after. */
export interface BrokerAdmin {
  cleanup(
    options: CleanupOptions & { readonly retentionMs: number; readonly now?: number },
  ): Promise<CleanupReport>;

  /** Creates the shared streams and buckets, and those of `queues`, unless they exist. */
  provision(queues: readonly string[]): Promise<void>;
}
