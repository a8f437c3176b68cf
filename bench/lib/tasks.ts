/**
 * The task every throughput run moves: a payload whose task body
 * `{"i":n,"p":<payload>}` is ~200 bytes, the same bytes for raw JetStream and
 * for jetstate.
 */

const pad = "x".repeat(160);

export interface BenchPayload {
  readonly n: number;
  readonly pad: string;
}

export const payloadFor = (n: number): BenchPayload => ({ n, pad });

export const makePayloads = (count: number): BenchPayload[] =>
  Array.from({ length: count }, (_, n) => payloadFor(n));

/** The body jetstate publishes for task `n` (see plan-submit.ts); raw JetStream publishes the same. */
export const bodyFor = (n: number, payload: BenchPayload): string =>
  `{"i":${n},"p":${JSON.stringify(payload)}}`;

/** Body size of a middle task, for the report. */
export const typicalBodyBytes = (count: number): number =>
  Buffer.byteLength(bodyFor(count >> 1, payloadFor(count >> 1)));

/** A unique, subject-safe name for one run's stream / prefix / queue. */
export const uniqueName = (kind: string, rep: number | string): string =>
  `${kind}${rep}x${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
