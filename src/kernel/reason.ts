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

/**
 * A reason cut to `maxBytes` (`maxReasonBytes` unless told) as stored,
 * saying it was cut and how long it was (in UTF-16 units).
 */
export const boundReason = (reason: string, maxBytes = maxReasonBytes): string => {
  if (storedBytes(reason) <= maxBytes) return reason;
  const note = `… [cut from ${reason.length} characters]`;
  let bytes = storedBytes(note);
  let kept = "";
  for (const char of reason) {
    bytes += storedBytes(char);
    if (bytes > maxBytes) break;
    kept += char;
  }
  return `${kept}${note}`;
};

/**
 * `<text><suffix>` within `maxReasonBytes` once `prefix` is put before it:
 * the text is cut, so what follows it (who cancelled) is kept.
 */
export const reasonWithSuffix = (prefix: string, text: string, suffix: string): string =>
  `${boundReason(text, Math.max(64, maxReasonBytes - storedBytes(prefix) - storedBytes(suffix)))}${suffix}`;
