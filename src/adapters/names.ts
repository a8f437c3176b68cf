/**
 * Names of everything jetstate keeps, from the runtime's prefix. The NATS
 * broker creates these streams, subjects and buckets; the memory broker uses
 * the same subject names, so reports (cleanup) read the same on both.
 */
export const brokerNames = (prefix: string) => ({
  tasksStream: `${prefix}_tasks`,
  resultsStream: `${prefix}_results`,
  jobsBucket: `${prefix}_jobs`,
  tasksSubject: (queue: string, jobId: string) => `${prefix}.tasks.${queue}.${jobId}`,
  resultsSubject: (jobId: string) => `${prefix}.results.${jobId}`,
  jobCreatedSubject: (queue: string) => `${prefix}.events.job.created.${queue}`,
  /** Core NATS, not a stream: progress notes are best effort and never stored. */
  progressSubject: (jobId: string) => `${prefix}.progress.${jobId}`,
  deadStream: `${prefix}_dead`,
  deadSubject: (jobId: string) => `${prefix}.dead.${jobId}`,
  advisoriesStream: `${prefix}_advisories`,
  /** MAX_DELIVERIES advisories of every job consumer on the tasks stream. */
  maxDeliveriesSubject: `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${prefix}_tasks.*`,
  leasesBucket: `${prefix}_leases`,
  /** The answer given for each delivery leased through the HTTP API. */
  answersBucket: `${prefix}_answers`,
});
export type BrokerNames = ReturnType<typeof brokerNames>;
