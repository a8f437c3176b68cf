import { ConnectionUnavailable } from "../../kernel/errors.ts";
import type { Logger } from "../../kernel/logger.ts";
import type { LeaseBook } from "./lease-book.ts";
import type { Caller, LeasePort } from "./lease-port.ts";
import type { ReceiptDelivery, Settling } from "./receipt-delivery.ts";
import { notAfterOf } from "./receipts.ts";

/** What settling a request's deliveries needs (`ReceiptAnswers`'). */
interface SettleContext {
  readonly port: LeasePort;
  readonly book: LeaseBook;
  readonly log: Logger;
  readonly now: () => number;
  readonly caller: Caller;
}

/**
 * Settles the deliveries by reference, then records their answers. Not a
 * delivery whose lease ended before its results were stored, no keep of it
 * heard by the server (the connection down meanwhile): the server may have
 * handed its task to another worker, whose delivery an ack or a nak of this
 * one would end (JetStream answers a delivery by its stream sequence). Its
 * answer is stored, and counted once; it is told expired, its claim given
 * back. Nor one whose settle would go out past its lease (a wait for the
 * connection): nothing is sent then (`notAfter`), and its claim is given back.
 */
export const settleDeliveries = async (
  { port, book, log, now: clock, caller }: SettleContext,
  all: readonly ReceiptDelivery[],
  request: Settling,
): Promise<void> => {
  const now = clock();
  const part = all.filter((d) => d.a.heldUntil > now);
  for (const d of all) {
    if (d.a.heldUntil > now) continue;
    log.warn(
      { jobId: d.a.c.j, index: d.a.c.i },
      "results stored after the delivery's lease ended: not settled",
    );
    request.unsettled(d.a);
  }
  if (part.length === 0) return;
  let sent = part;
  // Sent only within the leases (on the wall clock): a settle that waited for the connection
  // past them would reach the task's next holder (one is answered by its stream sequence).
  const notAfter = notAfterOf(
    part.map((d) => d.a.heldUntil),
    now,
  );
  try {
    await port.settle(
      part.map((d) => d.settle),
      notAfter,
    );
  } catch (error) {
    // A nak of unknown outcome is taken as sent (the task comes back by it, or at its lease's end):
    // sent again once the first had landed, it would hand back the next holder's delivery. An ack
    // or a term can reach only this one while its lease lasts: retried; so is one surely not sent.
    sent = error instanceof ConnectionUnavailable ? [] : part.filter((d) => d.settle.action === "nak");
    if (sent.length < part.length) request.failures.push(error);
    for (const d of part) if (!sent.includes(d)) request.unsettled(d.a);
    const naks = { err: error, jobId: sent[0]?.a.c.j, tasks: sent.length };
    if (sent.length > 0) log.warn(naks, "nak perhaps not sent: its task comes back by its lease anyway");
  }
  await Promise.all(
    sent.map(({ a, status }) =>
      port
        .recordAnswer(a.c.r, { status, digest: a.digest, at: clock() }, a.revision)
        .catch((error) => log.warn({ err: error, jobId: a.c.j }, "answer settled but not recorded")),
    ),
  );
  for (const d of sent) {
    const { a, status } = d;
    book.release(caller.identity, a.c.r);
    a.finish({ status, digest: a.digest, at: clock() });
    // Counted once settled, not as its results were stored: a request whose settle failed
    // stored them again when retried (the server keeping one), and counted them again.
    request.answered(d);
  }
};
