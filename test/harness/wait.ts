/**
 * Polling with a deadline: tests never sleep a fixed time, they wait until
 * something becomes true and fail with a clear message when it does not.
 */

export interface WaitUntilOptions {
  /** Give up after this many milliseconds. */
  timeoutMs: number;
  /** Pause between two checks (default 20 ms). */
  intervalMs?: number;
  /** What was being waited for; it starts the error message on timeout (a function: read then, with what it shows). */
  message: string | (() => string);
}

/** Resolves after `ms` milliseconds; the building block of every poll here. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Calls `predicate` every `intervalMs` until it returns (or resolves to) true.
 * Rejects once `timeoutMs` has passed, with an Error whose message starts with
 * `message`; a predicate that throws counts as "not yet", and its last error
 * is given as the cause.
 */
export async function waitUntil(
  predicate: () => boolean | Promise<boolean>,
  { timeoutMs, intervalMs = 20, message }: WaitUntilOptions,
): Promise<void> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let attempts = 0;
  let lastError: unknown;
  for (;;) {
    attempts++;
    try {
      if (await predicate()) return;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    const now = Date.now();
    if (now >= deadline) {
      const last =
        lastError === undefined
          ? ""
          : `; last error: ${lastError instanceof Error ? lastError.message : String(lastError)}`;
      throw new Error(
        `waitUntil timed out after ${now - started} ms (${attempts} checks): ${typeof message === "function" ? message() : message}${last}`,
        lastError === undefined ? undefined : { cause: lastError },
      );
    }
    await delay(Math.min(intervalMs, deadline - now));
  }
}

/** `promise`'s value, or `"never"` when it has not settled within `ms`: an assertion on it then says what did not end. */
export function within<T>(promise: Promise<T>, ms: number): Promise<T | "never"> {
  return Promise.race([
    promise,
    new Promise<"never">((resolve) => setTimeout(() => resolve("never"), ms).unref()),
  ]);
}

/** A promise (`opened`) a test holds work behind, and the function that opens it. */
export function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}
