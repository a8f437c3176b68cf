import { laneConsumer } from "../names.ts";
import type { QueueConsumers } from "../task-queue.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { isNotFound } from "./streams.ts";

/**
 * The consumers on the queue's tasks stream, by name: every job's own (its
 * id) and the lane. One consumer list, 256 per page: O(the queue's live
 * jobs), whatever the records kept. Without a lane consumer, whether lane
 * tasks are stored (a stream info filtered by the lane's subjects).
 */
export const natsQueueConsumers = (js: NatsJobBroker, queue: string): Promise<QueueConsumers> =>
  js.run("job.queue.consumers", async (nc) => {
    const { jsm } = await js.handles(nc);
    const stream = js.names.tasksStream(queue);
    const jobIds: string[] = [];
    let lane = false;
    try {
      for await (const consumer of jsm.consumers.list(stream)) {
        if (consumer.name === laneConsumer) lane = true;
        else jobIds.push(consumer.name);
      }
    } catch (error) {
      // No stream yet: nothing was ever submitted to the queue.
      if (isNotFound(error)) return { jobIds, lane };
      throw error;
    }
    // Its consumer lost (deleted by hand, or with the server's store) while lane tasks wait.
    if (!lane) {
      const info = await jsm.streams.info(stream, { subjects_filter: js.names.laneFilter(queue) });
      lane = Object.keys(info.state.subjects ?? {}).length > 0;
    }
    return { jobIds, lane };
  });
