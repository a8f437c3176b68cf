import { setTimeout as sleep } from "node:timers/promises";
import { Effect } from "effect";
import type { Broker } from "../adapters/broker.ts";
import { retryWith } from "../effects/retry.ts";
import type { Clock } from "../kernel/clock.ts";
import { OperationTimeout, TransientBrokerError } from "../kernel/errors.ts";
import type { FlowRecord } from "../kernel/flow-record.ts";
import { isSameFlow } from "./flow-plan.ts";

/**
 * A read retried on failure for up to ~1.5 s (50 ms doubling, five more tries), for an
 * answer that decides whether something was written.
 */
const readAgain = <A>(read: () => Promise<A>): Promise<A> =>
  Effect.runPromise(
    Effect.tryPromise({ try: read, catch: (error) => error }).pipe(
      retryWith({ attempts: 6, initialDelayMs: 50 }, () => true),
    ),
  );

/**
 * The write's failure, naming the flow when whether it was made is not known: its answer lost
 * and the flow not read back either. It may run (another runtime's sweep drives it), so the
 * caller is told its id, to look it up or cancel it; named by nothing, it could do neither, and
 * a retry made a second flow (`flows-submit-answer-lost-long.test.ts`, found by a review).
 */
const mayBeMade = (error: unknown, id: string): unknown => {
  const said = `flow ${id} may have been made (its write's answer was lost and it could not be read back): rt.flows.get("${id}") says`;
  if (error instanceof OperationTimeout)
    return new OperationTimeout({ ...error, message: `${error.message}; ${said}` });
  if (error instanceof TransientBrokerError)
    return new TransientBrokerError({ ...error, message: `${error.message}; ${said}` });
  return error;
};

/**
 * What a flow record's create that failed (`error`) leaves, read back: the
 * record is the commit point. `made`: this flow, written after all (our own
 * first write, its answer lost) or by a racing submit of the same request.
 * `other`: another flow of the id, with another request (another runtime's
 * submit won). `failed`: none, so the submit failed and nothing of it runs.
 * `unknown`: the read failed too, so the flow may have been made (the error,
 * which names it, says so): a read that fails says neither (the connection
 * that lost the answer may still be down), so it is read again a few times
 * before the outcome is taken as unknown.
 */
export const afterFailedCreate = async (
  flows: Broker["flows"],
  record: FlowRecord,
  error: unknown,
): Promise<{ made: FlowRecord } | { other: FlowRecord } | { failed: unknown } | { unknown: unknown }> => {
  let unread = false;
  const found = await readAgain(() => flows.getFlow(record.id)).catch(() => {
    unread = true;
    return undefined;
  });
  if (!found) return unread ? { unknown: mayBeMade(error, record.id) } : { failed: error };
  return isSameFlow(found.record, record) ? { made: found.record } : { other: found.record };
};

/**
 * A flow's live mark without its record is left this long by a sweep, which
 * then takes it for an orphan and purges it: the submit that wrote it may
 * still write the record until then. Also how long a handle of a flow whose
 * create's outcome is unknown looks for a flow under its id, from the flow's
 * `createdAt` (its first live mark's time): a create that lands later (a
 * publish the client kept through a reconnect) is a flow no sweep drives.
 */
export const orphanMarkMs = 60_000;

/**
 * The flow under `record`'s id, read every `everyMs` (a failed read is read
 * again) until one is found, `orphanMarkMs` have passed since the record's
 * `createdAt` by the runtime's clock, or the runtime stops: undefined if none was found.
 */
export const flowUnderId = async (
  flows: Broker["flows"],
  record: FlowRecord,
  runtime: { readonly clock: Clock; readonly stopping: AbortSignal },
  everyMs: number,
): Promise<FlowRecord | undefined> => {
  const { clock, stopping: signal } = runtime;
  while (!signal.aborted && clock.now() - record.createdAt < orphanMarkMs) {
    const found = await flows.getFlow(record.id).catch(() => undefined);
    if (found) return found.record;
    await sleep(everyMs, undefined, { signal }).catch(() => undefined);
  }
  return undefined;
};
