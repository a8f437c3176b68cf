import type { Command } from "commander";
import type { Diagnosis, Role } from "../index.ts";
import { ExitCode } from "./exit-codes.ts";
import { fields, print, printJson, table } from "./format.ts";
import { type GlobalOptions, withRuntime } from "./session.ts";

const report = (d: Diagnosis): string => {
  const clock =
    "skewMs" in d.clock
      ? `${d.clock.skewMs > 0 ? "+" : ""}${d.clock.skewMs} ms (server minus this host; round trip ${d.clock.roundTripMs} ms)`
      : d.clock.error;
  const parts = [
    fields([
      [
        "server",
        `${d.server.name ?? "?"} (nats-server ${d.server.version ?? "?"})${d.server.cluster ? `, cluster ${d.server.cluster}` : ""}`,
      ],
      ["jetstream", d.server.jetstream ? "on" : "OFF"],
      ["replicas wanted", String(d.replicasWanted)],
      ["clock skew", clock],
    ]),
    table(
      ["STREAM", "QUEUE", "PRESENT", "REPLICAS", "CONSUMERS", "MESSAGES"],
      d.stores.map((s) => [
        s.name,
        s.queue ?? "-",
        s.present === null
          ? "unreadable"
          : s.present
            ? "yes"
            : s.firstUse === undefined
              ? "MISSING"
              : "not in use yet",
        s.replicas === undefined ? "-" : String(s.replicas),
        s.consumers === undefined ? "-" : String(s.consumers),
        s.messages === undefined ? "-" : String(s.messages),
      ]),
    ),
    table(
      ["ROLE", "ALLOWED", "QUEUES", "DENIED"],
      d.roles.map((r) => [
        r.role,
        r.allowed ? "yes" : "no",
        r.queues.join(" ") || "-",
        r.denied.join(" ") || "-",
      ]),
    ),
    d.problems.length === 0
      ? "no problem found"
      : d.problems.map((p) => `PROBLEM: ${p.what}\n  fix: ${p.fix}`).join("\n"),
  ];
  return parts.join("\n\n");
};

export const registerDoctor = (program: Command, globals: () => GlobalOptions): void => {
  program
    .command("doctor")
    .description(
      "check the server, JetStream, jetstate's streams and buckets (as an admin also each queue's consumers, delayed stream and permit pools), this identity's permissions and the clock; exit 5 on a problem",
    )
    .option("--role <role...>", "the roles this identity is meant for: each is judged on every --queue")
    .option("--queue <queue...>", "the queues this identity is meant for (found on the server or not)")
    .action(async (o: { role?: string[]; queue?: string[] }) => {
      const g = globals();
      const meantFor = {
        ...(o.role ? { roles: o.role as Role[] } : {}),
        ...(o.queue ? { queues: o.queue } : {}),
      };
      const diagnosis = await withRuntime(g, "read", (rt) => rt.admin.diagnose(meantFor));
      if (g.json) printJson(diagnosis);
      else print(report(diagnosis));
      if (diagnosis.problems.length > 0) process.exitCode = ExitCode.problems;
    });
};
