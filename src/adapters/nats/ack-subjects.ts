/**
 * A delivery's reply subject, its JetStream ack subject, read:
 * `$JS.ACK.<stream>.<consumer>.<deliveries>.<streamSeq>.<deliverySeq>.<ts>.<pending>`, or with
 * `<domain>.<accountHash>` after `ACK` (and a random token at the end) on newer servers. A
 * delivery is known by it (`NatsTaskLeasing`, the HTTP leases' receipts), and a worker reads
 * its counts from it on every task.
 */

/**
 * The delivery count in a delivery's reply subject (`leaseInfo`'s layout:
 * the 5th token, or the 7th after `<domain>.<accountHash>`), read without
 * splitting it: nats.js's `info` splits the subject and parses all its
 * fields into a new object, ~5 % of a big job's client CPU when a worker
 * read only this one. Undefined when it is not such a subject.
 */
export const deliveryCountOf = (reply: string): number | undefined => ackNumberOf(reply, 0);

/** The consumer's delivery sequence in a delivery's reply subject (the token two after the count), read as `deliveryCountOf`. */
export const deliverySeqOf = (reply: string): number | undefined => ackNumberOf(reply, 2);

/** The number `field` tokens after the delivery count in an ack subject (0: the count itself). */
const ackNumberOf = (reply: string, field: 0 | 2): number | undefined => {
  if (!reply.startsWith("$JS.ACK.")) return undefined;
  // Where the dots around the field are in either layout, and how many there are up to 10: 8
  // dots is the 9-token layout, 10 or more the longer one. Kept in locals: an array of them was
  // ~0.4 KB of garbage a task.
  let dots = 0;
  let shortFrom = -1;
  let shortTo = -1;
  let longFrom = -1;
  let longTo = -1;
  for (let at = reply.indexOf("."); at >= 0 && dots < 10; at = reply.indexOf(".", at + 1)) {
    dots++;
    if (dots === 4 + field) shortFrom = at;
    else if (dots === 5 + field) shortTo = at;
    if (dots === 6 + field) longFrom = at;
    else if (dots === 7 + field) longTo = at;
  }
  const from = dots === 8 ? shortFrom : dots === 10 ? longFrom : -1;
  const to = dots === 8 ? shortTo : dots === 10 ? longTo : -1;
  if (from < 0 || to - from < 2) return undefined;
  let count = 0;
  for (let i = from + 1; i < to; i++) {
    const digit = reply.charCodeAt(i) - zero;
    if (digit < 0 || digit > 9) return undefined;
    count = count * 10 + digit;
  }
  return count >= 1 && Number.isSafeInteger(count) ? count : undefined;
};

const zero = 48;

/**
 * Stream, consumer and counts of a delivery from its reply subject:
 * `$JS.ACK.<stream>.<consumer>.<deliveries>.<streamSeq>.<deliverySeq>.<ts>.<pending>`,
 * or with `<domain>.<accountHash>` after `ACK` (and a random token at the end) on newer servers.
 */
export const leaseInfo = (
  reply: string,
): { stream: string; consumer: string; deliveryCount: number; streamSeq: number } | undefined => {
  const tokens = reply.split(".");
  if (tokens[0] !== "$JS" || tokens[1] !== "ACK") return undefined;
  if (tokens.length === 9) tokens.splice(2, 0, "_", "");
  if (tokens.length < 11) return undefined;
  const deliveryCount = Number(tokens[6]);
  const streamSeq = Number(tokens[7]);
  if (!Number.isSafeInteger(deliveryCount) || deliveryCount < 1 || !Number.isSafeInteger(streamSeq))
    return undefined;
  const [stream, consumer] = [tokens[4], tokens[5]];
  if (stream === undefined || consumer === undefined) return undefined;
  return { stream, consumer, deliveryCount, streamSeq };
};
