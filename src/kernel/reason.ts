/**
 * The most a reason (a job's or a flow's end, a cancel's: the caller's
 * text) takes in a stored record, in bytes as stored (UTF-8, JSON-escaped).
 * Bounded, so a record's growth is bounded too: a record that outgrew the
 * server's max payload with its reason failed its every write after, and
 * its job or flow never ended.
 */
export const maxReasonBytes = 256;

const utf8 = new TextEncoder();
const storedBytes = (text: string): number => utf8.encode(JSON.stringify(text)).length - 2;

/** A reason cut to `maxReasonBytes` as stored, saying it was cut and how long it was. */
export const boundReason = (reason: string): string => {
  if (storedBytes(reason) <= maxReasonBytes) return reason;
  const note = `… [cut from ${reason.length} characters]`;
  let bytes = storedBytes(note);
  let kept = "";
  for (const char of reason) {
    bytes += storedBytes(char);
    if (bytes > maxReasonBytes) break;
    kept += char;
  }
  return `${kept}${note}`;
};
