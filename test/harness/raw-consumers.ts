import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { brokerNames } from "../../src/adapters/names.ts";

/**
 * A consumer of a queue's tasks stream (a job's own, named by its id, or
 * the lane) as the server counts its deliveries not answered yet, read
 * through a nats.js client of the test's own, not through jetstate.
 */
export const unansweredDeliveries = async (
  servers: string,
  queue: string,
  consumer: string,
  prefix = "jetstate",
): Promise<number> => {
  const nc = await connect({ servers, name: "raw-consumer" });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.consumers.info(brokerNames(prefix).tasksStream(queue), consumer)).num_ack_pending;
  } finally {
    await nc.close();
  }
};
