import { aheadOfServerAt, aheadOfServerAtMost } from "../../kernel/clock.ts";
import { ErrorCode, HttpError } from "./http-errors.ts";
import type { LeasePort } from "./lease-port.ts";

/**
 * A receipt's end (`x`) is a time on the server's clock, the one its ack
 * wait runs on, not on the clock of the instance that leased the task: a
 * receipt is posted to any instance behind the load balancer, and one whose
 * clock was behind the leasing one's took a receipt past its lease, and
 * settled the delivery the server had handed to another worker meanwhile
 * (JetStream answers a delivery by its stream sequence). Each instance
 * turns it to and from its own clock by its reading of the server's (the
 * runtime's, read again only when it no longer holds: no request per
 * reserve). Both ways err early: signed, the end is taken earlier by up to
 * the reading's round trip (`aheadOfServerAtMost`); read, the reading's
 * stamp is taken as the server's time when it was asked for (it is no
 * earlier), so the end reads earlier here by up to the same.
 */
export interface ReceiptClock {
  /** A lease's end on this instance's clock, as a receipt carries it (the server's clock). */
  toReceipt(end: number): number;
  /** A receipt's end on this instance's clock. */
  fromReceipt(x: number): number;
}

/** A port that reads no server clock (a unit test's fake, with one clock for all): its own is taken for it. */
const sameClock: ReceiptClock = { toReceipt: (end) => end, fromReceipt: (x) => x };

/**
 * The receipt clock of a request, from the server's clock as the port reads
 * it (`serverTime`) and this instance's (`now`). Not known (the server did
 * not answer the read): 503, nothing is leased or settled, the worker tries
 * again; a receipt's end cannot be judged without it.
 */
export const receiptClock = async (
  port: Pick<LeasePort, "serverTime">,
  now: () => number,
): Promise<ReceiptClock> => {
  if (!port.serverTime) return sameClock;
  const seen = await port.serverTime();
  if (seen === undefined)
    throw new HttpError(503, ErrorCode.unavailable, "the server's clock is not known; try again");
  const at = now();
  const mostAhead = aheadOfServerAtMost(at, seen);
  const leastAhead = aheadOfServerAt(at, seen);
  // Whole milliseconds, as a receipt carries them: rounded down, early as the rest.
  return { toReceipt: (end) => Math.floor(end - mostAhead), fromReceipt: (x) => x + leastAhead };
};
