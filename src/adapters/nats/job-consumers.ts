import { AckPolicy, type ConsumerConfig, DeliverPolicy, type JetStreamManager } from "@nats-io/jetstream";
import type { JobSettings, JobTasksRef } from "../../kernel/job-record.ts";
import type { BrokerNames } from "../names.ts";
import type { ConsumerRestore } from "../task-queue.ts";
import { isNotFound, nanos } from "./streams.ts";

/**
 * A job's own consumer: the commit point of its submit, and what gives the
 * job its turn at the workers. With `jobs.memoryConsumers` it is kept in the
 * server's memory (`mem_storage`): made and deleted for about a third of the
 * server's CPU of one kept on disk (nats-server 2.9.10: ~0.35 ms of CPU to
 * make against ~0.8–1.3 ms, ~0.2 ms to delete against ~0.4 ms), and lost
 * when the server restarts (`restoreJobConsumer` makes it again).
 */
export const jobConsumerConfig = (
  names: BrokerNames,
  queue: string,
  jobId: string,
  settings: JobSettings,
  inMemory: boolean,
): Partial<ConsumerConfig> => ({
  durable_name: jobId,
  filter_subject: names.tasksSubject(queue, jobId),
  ack_policy: AckPolicy.Explicit,
  ack_wait: nanos(settings.ackWaitMs),
  max_deliver: settings.maxDeliver,
  max_ack_pending: 20_000,
  deliver_policy: DeliverPolicy.All,
  ...(inMemory ? { mem_storage: true } : {}),
});

/** Whether a JetStream lookup found what it asked for: a 404 (or a null, by client version) is "no". */
export const found = <A>(lookUp: Promise<A>): Promise<boolean> =>
  lookUp.then(
    (value) => value !== null,
    (error: unknown) => (isNotFound(error) ? false : Promise.reject(error)),
  );

/**
 * The job's consumer made again when it is gone and tasks of the job are
 * still stored, or `held` until due (asked only then: a job whose tasks went
 * with the store is lost, not restored). Only for a job whose record says it
 * runs: its end deletes the consumer.
 */
export const restoreJobConsumer = async (
  jsm: JetStreamManager,
  names: BrokerNames,
  job: JobTasksRef,
  config: Partial<ConsumerConfig>,
  held: () => Promise<boolean>,
): Promise<ConsumerRestore> => {
  const stream = names.tasksStream(job.queue);
  if (await found(jsm.consumers.info(stream, job.id))) return "present";
  const subject = names.tasksSubject(job.queue, job.id);
  const stored = await found(jsm.streams.getMessage(stream, { last_by_subj: subject }));
  if (!stored && !(await held())) return "empty";
  await jsm.consumers.add(stream, config);
  return "restored";
};
