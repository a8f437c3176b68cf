/**
 * Every error the HTTP API answers is JSON `{ error: { code, message } }`
 * with a stable `code` a worker can branch on; the message is for people.
 */
export const ErrorCode = {
  missingToken: "missing_token",
  invalidToken: "invalid_token",
  forbidden: "forbidden",
  receiptNotYours: "receipt_not_yours",
  tooManyLeases: "too_many_leases",
  tooManyStreams: "too_many_streams",
  alreadyAnswered: "already_answered",
  invalidJson: "invalid_json",
  invalidRequest: "invalid_request",
  bodyTooLarge: "body_too_large",
  invalidReceipt: "invalid_receipt",
  receiptWrongJob: "receipt_wrong_job",
  leaseExpired: "lease_expired",
  jobNotFound: "job_not_found",
  jobFinished: "job_finished",
  jobInLane: "job_in_lane",
  notFound: "not_found",
  methodNotAllowed: "method_not_allowed",
  unavailable: "unavailable",
  internal: "internal",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 405 | 409 | 410 | 413 | 429 | 500 | 503,
    readonly code: ErrorCode,
    message: string,
    /** Machine-readable extras, e.g. the offending field. */
    readonly details?: Readonly<Record<string, unknown>>,
  ) {
    super(message);
  }

  body(): { error: { code: ErrorCode; message: string } & Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }
}

export const badRequest = (field: string, message: string): HttpError =>
  new HttpError(400, ErrorCode.invalidRequest, `${field}: ${message}`, { field });
