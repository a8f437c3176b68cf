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

const moverSubjects = [
  "$JS.API.STREAM.CREATE.p_delayed",
  "$JS.API.STREAM.INFO.p_delayed",
  "$JS.API.CONSUMER.DURABLE.CREATE.p_delayed.due",
  "$JS.API.CONSUMER.INFO.p_delayed.due",
  "$JS.API.CONSUMER.MSG.NEXT.p_delayed.due",
  "$JS.ACK.p_delayed.due.1.2.3.4.5",
  "$JS.API.STREAM.MSG.GET.p_delayed",
  "$JS.API.STREAM.MSG.DELETE.p_delayed",
];

describe("natsPermissions: delayed tasks", () => {
  it.each(["submitter", "supervisor"] as const)(
    "a %s of A may hold A's tasks and move them, not B's",
    (role) => {
      const { publish } = natsPermissions({ role, queues: ["A"], prefix: "p" });
      for (const subject of [...moverSubjects, "p.delayed.A.job1", "p.tasks.A.job1"])
        expect(allowed(publish.allow, subject), subject).toBe(true);
      for (const subject of ["p.delayed.B.job1", "p.tasks.B.job1"])
        expect(allowed(publish.allow, subject), subject).toBe(false);
    },
  );

  it("a worker may not touch the delayed stream", () => {
    const { publish } = natsPermissions({ role: "worker", queues: ["A"], prefix: "p" });
    for (const subject of [...moverSubjects, "p.delayed.A.job1"])
      expect(allowed(publish.allow, subject), subject).toBe(false);
  });
});
