import { laneConsumer } from "../names.ts";
import type { QueueConsumers } from "../task-queue.ts";
import type { NatsJobBroker } from "./job-broker.ts";
import { isNotFound } from "./streams.ts";

/** One page of `$JS.API.CONSUMER.NAMES` (the server's pages hold up to 1,024 names, sorted). */
export interface NamesPage {
  readonly total: number;
  readonly consumers: readonly string[] | null;
}

/**
 * Names read again from the end of the previous page: a page is read by
 * offset, so a consumer deleted between two pages (a job that ended) shifts
 * the next one down by one. Up to this many deletions in between miss no
 * name; a consumer made meanwhile is a job whose commit the record watch
 * tells.
 */
const overlap = 128;

/** Every name of a paged list read by offset, each page from `overlap` names before the last one's end. */
export const namesThroughPages = async (
  read: (offset: number) => Promise<NamesPage>,
): Promise<Set<string>> => {
  const names = new Set<string>();
  for (let offset = 0; ; ) {
    const page = await read(offset);
    const got = page.consumers ?? [];
    for (const name of got) names.add(name);
    if (got.length === 0 || offset + got.length >= page.total) return names;
    offset += Math.max(1, got.length - overlap);
  }
};

/**
 * The consumers on the queue's tasks stream, by name: every job's own (its
 * id) and the lane. Consumer names only, 1,024 a page: O(the queue's live
 * jobs), whatever the records kept. Without a lane consumer, whether lane
 * tasks are stored (a stream info filtered by the lane's subjects).
 */
export const natsQueueConsumers = (js: NatsJobBroker, queue: string): Promise<QueueConsumers> =>
  js.run("job.queue.consumers", async (nc) => {
    const stream = js.names.tasksStream(queue);
    let names: Set<string>;
    try {
      names = await namesThroughPages((offset) =>
        js.acks(nc).request<NamesPage>(`$JS.API.CONSUMER.NAMES.${stream}`, { offset }),
      );
    } catch (error) {
      // No stream yet: nothing was ever submitted to the queue.
      if (isNotFound(error)) return { jobIds: [], lane: false };
      throw error;
    }
    const lane = names.delete(laneConsumer);
    if (lane) return { jobIds: [...names], lane };
    // Its consumer lost (deleted by hand, or with the server's store) while lane tasks wait.
    const { jsm } = await js.handles(nc);
    const info = await jsm.streams.info(stream, { subjects_filter: js.names.laneFilter(queue) });
    return { jobIds: [...names], lane: Object.keys(info.state.subjects ?? {}).length > 0 };
  });
