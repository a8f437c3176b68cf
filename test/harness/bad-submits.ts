/** Bad submit requests and the field each `InvalidArgument` must name: the same table for every broker. */
/** Longer than the server's 4 KiB control line: sent in a subject, it would close the connection. */
export const long = "x".repeat(5000);
const circular: Record<string, unknown> = {};
circular.self = circular;
export const badSubmits: Array<[string, Record<string, unknown>, string]> = [
  ["empty task list", { queue: "q", tasks: [] }, "tasks"],
  ["tasks not an array", { queue: "q", tasks: "abc" }, "tasks"],
  ["a task above max payload", { queue: "q", tasks: [1, "x".repeat(1024 * 1024)] }, "tasks[1]"],
  ["queue with a dot", { queue: "a.b", tasks: [1] }, "queue"],
  ["queue with *", { queue: "a*", tasks: [1] }, "queue"],
  ["queue with >", { queue: ">", tasks: [1] }, "queue"],
  ["queue with whitespace", { queue: "a b", tasks: [1] }, "queue"],
  ["a BigInt payload", { queue: "q", tasks: [1, 2n] }, "tasks[1]"],
  ["a circular payload", { queue: "q", tasks: [circular] }, "tasks[0]"],
  ["a function payload", { queue: "q", tasks: [() => 1] }, "tasks[0]"],
  ["maxFailures above 1", { queue: "q", tasks: [1], maxFailures: 1.5 }, "maxFailures"],
  ["maxFailures negative", { queue: "q", tasks: [1], maxFailures: -0.1 }, "maxFailures"],
  ["maxDeliver 0", { queue: "q", tasks: [1], maxDeliver: 0 }, "maxDeliver"],
  ["unknown option", { queue: "q", tasks: [1], maxRetries: 3 }, "maxRetries"],
  ["empty idempotency key", { queue: "q", tasks: [1], idempotencyKey: "" }, "idempotencyKey"],
  ["a 5,000-character queue name", { queue: long, tasks: [1] }, "queue"],
  ["a 5,000-character idempotency key", { queue: "q", tasks: [1], idempotencyKey: long }, "idempotencyKey"],
  ["an idempotency key with a newline", { queue: "q", tasks: [1], idempotencyKey: "a\nb" }, "idempotencyKey"],
  ["backoff [Infinity]", { queue: "q", tasks: [1], backoff: [Number.POSITIVE_INFINITY] }, "backoff[0]"],
  ["backoff with NaN", { queue: "q", tasks: [1], backoff: [100, Number.NaN] }, "backoff[1]"],
  ["backoff negative", { queue: "q", tasks: [1], backoff: [-1] }, "backoff[0]"],
  ["backoff empty", { queue: "q", tasks: [1], backoff: [] }, "backoff"],
  ["ackWaitMs Infinity", { queue: "q", tasks: [1], ackWaitMs: Number.POSITIVE_INFINITY }, "ackWaitMs"],
  ["ackWaitMs beyond a timer's reach", { queue: "q", tasks: [1], ackWaitMs: 2 ** 31 }, "ackWaitMs"],
  ["stallAfterMs NaN", { queue: "q", tasks: [1], stallAfterMs: Number.NaN }, "stallAfterMs"],
  ["stalledTimeoutMs negative", { queue: "q", tasks: [1], stalledTimeoutMs: -5 }, "stalledTimeoutMs"],
  ["maxFailures NaN", { queue: "q", tasks: [1], maxFailures: Number.NaN }, "maxFailures"],
  ["maxDeliver Infinity", { queue: "q", tasks: [1], maxDeliver: Number.POSITIVE_INFINITY }, "maxDeliver"],
];
