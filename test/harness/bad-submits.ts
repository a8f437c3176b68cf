/** Bad submit requests and the field each `InvalidArgument` must name: the same table for every broker. */
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
];
