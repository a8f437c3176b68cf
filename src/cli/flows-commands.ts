import type { Command } from "commander";
import type { FlowSnapshot } from "../index.ts";
import { notFound } from "./exit-codes.ts";
import { clip, fields, print, printJson, table } from "./format.ts";
import { type GlobalOptions, withRuntime } from "./session.ts";

/** A flow as stored: its status, then one row per job of the flow. */
const flowText = (flow: FlowSnapshot): string =>
  [
    fields([
      ["flow", flow.id],
      ["status", flow.status],
      ...(flow.reason ? ([["reason", flow.reason]] as const) : []),
    ]),
    table(
      ["NAME", "STATUS", "JOB", "DEPENDS ON", "REASON"],
      Object.entries(flow.nodes).map(([name, node]) => [
        name,
        node.status,
        node.jobId,
        node.dependsOn.join(",") || "-",
        clip(node.reason ?? "", 60),
      ]),
    ),
  ].join("\n");

export const registerFlows = (program: Command, globals: () => GlobalOptions): void => {
  const flows = program.command("flows").description("show flows (jobs of jobs)");
  flows
    .command("show <id>")
    .description("a flow as stored: its status and each job's (name, status, job id, dependencies, reason)")
    .action(async (id: string) => {
      const g = globals();
      const shown = await withRuntime(g, "jobs", async (rt) => {
        const flow = await rt.flows.get(id);
        if (!flow) throw notFound(`no flow ${id}`);
        return flow.snapshot();
      });
      if (g.json) return printJson(shown);
      print(flowText(shown));
    });
};
