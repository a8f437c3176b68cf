import type { RecordWatch } from "../adapters/job-records.ts";
import type { LoopGroup } from "../effects/loop-group.ts";
import type { JobRecord } from "../kernel/job-record.ts";

/** One reader of the runtime's record watch. */
export interface RecordListener {
  /** Every record written from the watch's start on, in the order written, with its revision. */
  onRecord(record: JobRecord, revision: number): void;
  /**
   * The watch is in place: every write from now on reaches `onRecord`.
   * Called again each time the watch is placed again (a reconnect, a server
   * back with an empty store): what the listener holds may have changed
   * meanwhile, so it reads it again. Called at once (asynchronously) for a
   * listener that comes once the watch is in place. `forget`: a revision the
   * listener knew from before may not be compared with the watch's, since
   * the store may have been made again meanwhile (a server back empty), or
   * come back behind what was read, and its revisions started over (or from
   * below): true when the watch found it so, and on the
   * watch's first placement (a read before it may be of a store lost since,
   * which that placement cannot tell). Called before any record of the
   * placement reaches `onRecord`.
   */
  onPlaced(forget: boolean): void;
}

/**
 * The runtime's one watch of the job records, changes from its start on,
 * shared by its job actors (and flows) and its workers: each record write
 * reaches the process once, whoever in it reads it. It starts with its
 * first listener, so a runtime with no job actor and no worker runs none.
 * A watch of every record kept would make each start (and reconnect) read
 * them all: a listener reads what it holds (`onPlaced`) instead.
 */
export class RecordFeed {
  readonly #loops: LoopGroup;
  readonly #watch: RecordWatch;
  readonly #listeners = new Set<RecordListener>();
  #started = false;
  #placed = false;

  constructor(loops: LoopGroup, watch: RecordWatch) {
    this.#loops = loops;
    this.#watch = watch;
  }

  /** Until the function it returns is called. */
  listen(listener: RecordListener): () => void {
    this.#listeners.add(listener);
    if (this.#placed) queueMicrotask(() => this.#listeners.has(listener) && listener.onPlaced(false));
    if (!this.#started) {
      this.#started = true;
      this.#loops.run("job-records", (signal) =>
        this.#watch.watchRecordChanges(
          (record, revision) => this.#onRecord(record, revision),
          signal,
          (restarted) => this.#onPlaced(restarted),
          "records",
        ),
      );
    }
    return () => this.#listeners.delete(listener);
  }

  #onRecord(record: JobRecord, revision: number): void {
    for (const listener of this.#listeners) listener.onRecord(record, revision);
  }

  #onPlaced(restarted: boolean): void {
    const forget = restarted || !this.#placed;
    this.#placed = true;
    for (const listener of this.#listeners) listener.onPlaced(forget);
  }
}
