/**
 * What the CLI's exit status means, for scripts and on-call runbooks; the
 * same table is printed by `--help` and written in docs/operations.md.
 */
export const ExitCode = {
  /** Done; for `jobs watch`: the job succeeded. */
  ok: 0,
  /** The command failed, or the job watched failed. */
  failed: 1,
  /** Bad flag, argument or id (the runtime's `InvalidArgument` says which). */
  usage: 2,
  /** No such job (or nothing of it to act on). */
  notFound: 3,
  /** NATS did not answer within `--timeout`, or refused this identity. */
  unreachable: 4,
  /** `doctor` found at least one problem. */
  problems: 5,
  /** Interrupted (Ctrl-C): 128 + SIGINT, as shells report it. */
  interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export const exitCodesHelp = `
Exit codes:
  0  ok (jobs watch: the job succeeded)
  1  the command failed (jobs watch: the job failed)
  2  usage error: a bad flag, argument or id
  3  not found: no such job
  4  NATS unreachable or not authorised within --timeout
  5  doctor found problems
  130  interrupted (Ctrl-C)
`;

/** An outcome the CLI reports itself (not a runtime error): its message and exit code. */
export class CliFailure extends Error {
  readonly code: ExitCode;
  constructor(name: string, message: string, code: ExitCode) {
    super(message);
    this.name = name;
    this.code = code;
  }
}

export const notFound = (what: string): CliFailure => new CliFailure("NotFound", what, ExitCode.notFound);
