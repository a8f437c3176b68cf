/**
 * Texts far over a record's 256-byte bound for a reason, each stored
 * differently: one byte a character, two, four (surrogate pairs), six
 * (escaped control characters), and quotes and newlines JSON escapes.
 */
export const longTexts: readonly string[] = [
  "r".repeat(10_000),
  "é".repeat(5_000),
  "🙂".repeat(3_000),
  "\u0001".repeat(2_000),
  `"quoted\\"${"\n".repeat(500)}`,
];
