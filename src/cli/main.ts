/**
 * `jetstate-jobs`: jobs, dead letters, workers and the server, read with the
 * same environment as the runtime (NATS_URL and the NATS_* credential
 * variables). Every command takes `--json` for scripts; its exit status
 * means something (exit-codes.ts).
 */
import { Command, CommanderError, Option } from "commander";
import { version } from "../index.ts";
import { registerDashboard } from "./dashboard-command.ts";
import { registerDoctor } from "./doctor-command.ts";
import { CliFailure, ExitCode, exitCodesHelp } from "./exit-codes.ts";
import { registerAgents, registerCleanup, registerDlq, registerWorkers } from "./fleet-commands.ts";
import { registerFlows } from "./flows-commands.ts";
import { printable } from "./format.ts";
import { registerJobs } from "./jobs-commands.ts";
import { registerQueues } from "./queues-commands.ts";
import { registerSchedules } from "./schedules-commands.ts";
import type { GlobalOptions } from "./session.ts";

/** Typed runtime errors by their tag: what the exit status says about each. */
const exitCodeOf = (error: unknown): ExitCode => {
  if (error instanceof CliFailure) return error.code;
  const tag = (error as { _tag?: unknown })?._tag;
  if (tag === "InvalidArgument") return ExitCode.usage;
  if (tag === "ConnectionUnavailable" || tag === "OperationTimeout" || tag === "TransientBrokerError")
    return ExitCode.unreachable;
  if (/permission|authori[sz]ation/i.test(String((error as { message?: unknown })?.message)))
    return ExitCode.unreachable;
  return ExitCode.failed;
};

/** One line: the typed error's name and message. */
const describe = (error: unknown): string => {
  if (!(error instanceof Error)) return String(error);
  const tag = (error as { _tag?: unknown })._tag;
  return `${typeof tag === "string" ? tag : error.name}: ${error.message.replace(/\s*\n\s*/g, " ")}`;
};

const timeoutMs = (value: string): number => {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0)
    throw new CliFailure(
      "InvalidArgument",
      `--timeout: must be a positive number of seconds, got ${JSON.stringify(value)}`,
      ExitCode.usage,
    );
  return Math.round(seconds * 1000);
};

const buildProgram = (): Command => {
  const program = new Command("jetstate-jobs")
    .description("inspect and operate jetstate jobs on NATS JetStream")
    .addOption(new Option("--servers <urls>", "NATS server URL(s), comma-separated").env("NATS_URL"))
    .option("--prefix <prefix>", "jetstate's prefix of streams, buckets and subjects", "jetstate")
    .option("--timeout <seconds>", "give up when NATS does not answer within this", "10")
    .option("--json", "print one JSON document on stdout instead of text", false)
    .addHelpText(
      "after",
      `${exitCodesHelp}
Environment: NATS_URL (as --servers), NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CREDS,
NATS_CA/NATS_CERT/NATS_KEY (TLS), JETSTATE_LOG_LEVEL (runtime log lines on stderr; default silent),
JETSTATE_REPLICAS (replicas of the streams and buckets it creates, and doctor's replicas wanted; default 1).`,
    )
    .version(version, "-V, --version", "print the version")
    .exitOverride();
  const globals = (): GlobalOptions => {
    const o = program.opts<{ servers?: string; prefix: string; timeout: string; json: boolean }>();
    return {
      ...(o.servers === undefined ? {} : { servers: o.servers }),
      prefix: o.prefix,
      timeout: timeoutMs(o.timeout),
      json: o.json,
    };
  };
  registerJobs(program, globals);
  registerFlows(program, globals);
  registerSchedules(program, globals);
  registerDlq(program, globals);
  registerWorkers(program, globals);
  registerAgents(program, globals);
  registerQueues(program, globals);
  registerCleanup(program, globals);
  registerDoctor(program, globals);
  registerDashboard(program, globals);
  // Subcommands exit through the same override: a usage error anywhere is exit 2.
  for (const command of program.commands) {
    command.exitOverride();
    for (const sub of command.commands) sub.exitOverride();
  }
  return program;
};

const main = async (argv: readonly string[]): Promise<void> => {
  // `jetstate-jobs jobs ls | head`: the reader went away; what is left to print goes nowhere.
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(process.exitCode ?? ExitCode.ok);
    throw error;
  });
  // Ctrl-C (a `jobs watch` left running): the CLI holds no lease and owns no job, so there is
  // nothing to hand back; the server drops the connection.
  process.once("SIGINT", () => process.exit(ExitCode.interrupted));
  try {
    await buildProgram().parseAsync([...argv]);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are not errors; commander has already printed its message.
      process.exitCode =
        error.code === "commander.helpDisplayed" || error.code === "commander.version"
          ? ExitCode.ok
          : ExitCode.usage;
    } else {
      process.stderr.write(`${printable(describe(error))}\n`);
      process.exitCode = exitCodeOf(error);
    }
  }
  // The runtime was stopped; if anything still holds the event loop, end anyway after a moment
  // rather than hang a script (unref'd: a clean exit does not wait for it).
  setTimeout(() => process.exit(), 3000).unref();
};

void main(process.argv);
