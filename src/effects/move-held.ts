import { initialTransition, transition } from "xstate";
import type { DelayedTasks, HeldAnswer, HeldTask } from "../adapters/delayed-tasks.ts";
import type { JobRecords } from "../adapters/job-records.ts";
import type { Logger } from "../kernel/logger.ts";
import { delayedMachine } from "../machines/delayed.machine.ts";

export interface MoverPorts extends Pick<DelayedTasks, "releaseHeld">, Pick<JobRecords, "getRecord"> {}

/**
 * One delivery of a held task, decided by the delayed statechart
 * (machines/delayed.machine.ts, run with XState's pure `transition()`): not
 * due → nak for what is left; due → read the job's record: committed and
 * running → publish it to the job's subject with its message id, then ack;
 * still submitting → nak shortly; rolled back, over, gone → ack (dropped).
 * The record is read only once the task is due.
 */
export const moveHeld = async (
  ports: MoverPorts,
  task: HeldTask,
  now: () => number,
  log: Logger,
): Promise<HeldAnswer> => {
  let [state] = initialTransition(delayedMachine, { dueAt: task.dueAt, msgId: task.msgId });
  [state] = transition(delayedMachine, state, { type: "held.delivered", now: now() });
  if (state.matches("due")) {
    const found = (await ports.getRecord(task.jobId))?.record;
    // A job of another queue than the task's is not its job: as if it had none.
    const record = found?.queue === task.queue ? found : undefined;
    [state] = transition(delayedMachine, state, { type: "record.read", record });
  }
  if (state.matches("moving")) {
    const published = await ports.releaseHeld(task).then(
      () => true,
      (error: unknown) => {
        log.warn({ jobId: task.jobId, err: error }, "due task not published; trying again");
        return false;
      },
    );
    [state] = transition(delayedMachine, state, { type: published ? "move.published" : "move.failed" });
  }
  if (state.matches("dropped"))
    log.debug({ jobId: task.jobId, reason: state.context.reason }, "held task dropped");
  if (state.status === "done") return { kind: "done" };
  return { kind: "later", ms: Math.max(0, state.context.retryAt - state.context.now) };
};

/**
 * The runtime's mover: `moveHeld` for each delivery, with the record reads
 * of deliveries in flight at once shared per job (a job held by one
 * `delayMs` falls due all at once: one read for its tasks, not one each).
 * A read is shared only while it is in flight: each is as fresh as its own.
 */
export const mover = (
  ports: MoverPorts,
  now: () => number,
  log: Logger,
): ((task: HeldTask) => Promise<HeldAnswer>) => {
  const reading = new Map<string, ReturnType<MoverPorts["getRecord"]>>();
  const getRecord: MoverPorts["getRecord"] = (id) => {
    const known = reading.get(id);
    if (known) return known;
    const read = ports.getRecord(id).finally(() => reading.delete(id));
    reading.set(id, read);
    return read;
  };
  const shared: MoverPorts = { getRecord, releaseHeld: (task) => ports.releaseHeld(task) };
  return (task) => moveHeld(shared, task, now, log);
};
