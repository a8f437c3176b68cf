/** The NATS grants of delayed tasks: who may hold, move and remove them (api/permissions.ts). */
import { describe, expect, it } from "vitest";
import { natsPermissions } from "../../src/api/permissions.ts";

/** NATS subject matching: `*` one token, `>` one or more trailing tokens. */
const matches = (pattern: string, subject: string): boolean => {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
};
const allowed = (subjects: readonly string[], subject: string) =>
  subjects.some((pattern) => matches(pattern, subject));

/** What a mover of queue `q` does on its queue's delayed stream. */
const moverSubjects = (q: string) => [
  `$JS.API.STREAM.CREATE.p_delayed_${q}`,
  `$JS.API.STREAM.INFO.p_delayed_${q}`,
  `$JS.API.CONSUMER.DURABLE.CREATE.p_delayed_${q}.due`,
  `$JS.API.CONSUMER.INFO.p_delayed_${q}.due`,
  `$JS.API.CONSUMER.MSG.NEXT.p_delayed_${q}.due`,
  `$JS.ACK.p_delayed_${q}.due.1.2.3.4.5`,
  `$JS.API.STREAM.MSG.GET.p_delayed_${q}`,
  `$JS.API.STREAM.MSG.DELETE.p_delayed_${q}`,
  `$JS.API.DIRECT.GET.p_delayed_${q}`,
  `$JS.API.DIRECT.GET.p_delayed_${q}.p.delayed.${q}.job1`,
];

describe("natsPermissions: delayed tasks", () => {
  it.each(["submitter", "supervisor"] as const)(
    "a %s of A may hold A's tasks and move them, not B's",
    (role) => {
      const { publish } = natsPermissions({ role, queues: ["A"], prefix: "p" });
      for (const subject of [...moverSubjects("A"), "p.delayed.A.job1", "p.tasks.A.job1"])
        expect(allowed(publish.allow, subject), subject).toBe(true);
      // Queue B's held tasks: neither read, pulled, acked, deleted nor held.
      for (const subject of [...moverSubjects("B"), "p.delayed.B.job1", "p.tasks.B.job1"])
        expect(allowed(publish.allow, subject), subject).toBe(false);
    },
  );

  it("a worker may not touch the delayed stream", () => {
    const { publish } = natsPermissions({ role: "worker", queues: ["A"], prefix: "p" });
    for (const subject of [...moverSubjects("A"), "p.delayed.A.job1"])
      expect(allowed(publish.allow, subject), subject).toBe(false);
  });

  it("an admin of A provisions A's delayed stream, not B's", () => {
    const { publish } = natsPermissions({ role: "admin", queues: ["A"], prefix: "p" });
    for (const subject of [
      "$JS.API.STREAM.CREATE.p_delayed_A",
      "$JS.API.CONSUMER.DURABLE.CREATE.p_delayed_A.due",
    ])
      expect(allowed(publish.allow, subject), subject).toBe(true);
    expect(allowed(publish.allow, "$JS.API.STREAM.CREATE.p_delayed_B")).toBe(false);
  });
});
