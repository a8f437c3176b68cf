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
 * earlier), so the end reads earlier here by up to the same. But for the
 * stamp's cut to whole milliseconds (`parseServerTime`): a stamp up to
 * 1 ms early reads an end up to 1 ms late, inside the lease's margin.
 *
 * A request times everything by `now()`: this instance's clock as the
 * request read it at its start, carried on by the monotonic clock, and
 * turned to and from the server's by the offset taken at that same
 * instant. A step of the wall clock during the request (a pull waiting out
 * a reconnect) moves neither: mixed with the offset from before the step,
 * a lease timed after it was signed a minute past the server's ack wait.
 */
export interface ReceiptClock {
  /** The request's clock: this instance's at the request's start, carried on by the monotonic clock. */
  now(): number;
  /** A lease's end on the request's clock, as a receipt carries it (the server's clock). */
  toReceipt(end: number): number;
  /** A receipt's end on the request's clock. */
  fromReceipt(x: number): number;
  /** A time of the request's clock on the monotonic one (`own-lease-ends.ts`). */
  toMonotonic(at: number): number;
  /** A time of the monotonic clock on the request's. */
  fromMonotonic(elapsed: number): number;
}

/**
 * The receipt clock of a request, from the server's clock as the port reads
 * it (`serverTime`), this instance's (`now`) and a monotonic one
 * (`monotonic`: the runtime's, a test's manual clock). Not known (the
 * server did not answer the read): 503, nothing is leased or settled, the
 * worker tries again; a receipt's end cannot be judged without it. A port
 * that reads no server clock (a unit test's fake, with one clock for all)
 * takes `now` for it, as it runs.
 */
export const receiptClock = async (
  port: Pick<LeasePort, "serverTime">,
  now: () => number,
  monotonic: () => number,
): Promise<ReceiptClock> => {
  if (!port.serverTime) {
    const same = (t: number) => t;
    // `now` as it runs: each turn reads both clocks at one instant.
    const toMonotonic = (t: number) => t + (monotonic() - now());
    const fromMonotonic = (elapsed: number) => elapsed + (now() - monotonic());
    return { now, toReceipt: same, fromReceipt: same, toMonotonic, fromMonotonic };
  }
  const seen = await port.serverTime();
  if (seen === undefined)
    throw new HttpError(503, ErrorCode.unavailable, "the server's clock is not known; try again");
  // One instant: the wall clock, the monotonic one and the reading carried on to it.
  const at = now();
  const from = monotonic();
  const mostAhead = aheadOfServerAtMost(at, seen);
  const leastAhead = aheadOfServerAt(at, seen);
  return {
    now: () => at + (monotonic() - from),
    // Whole milliseconds, as a receipt carries them: rounded down, early by less than 1 ms more.
    toReceipt: (end) => Math.floor(end - mostAhead),
    fromReceipt: (x) => x + leastAhead,
    toMonotonic: (t) => from + (t - at),
    fromMonotonic: (elapsed) => at + (elapsed - from),
  };
};
