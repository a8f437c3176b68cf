/**
 * A nats-server whose users each hold one role's permissions
 * (`natsPermissions()`, written by `roleUsersConfig`) and log every
 * violation to a file, and runtimes connected as those users: the setup of
 * the least-privilege tests of each part (queues, delayed tasks, schedules,
 * flows).
 */
import path from "node:path";
import type { RuntimeOptions } from "../../src/api/options.ts";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { type Logger, silentLogger } from "../../src/kernel/logger.ts";
import { authFiles, loggedViolations, roleUsersConfig } from "./nats-auth.ts";
import { startNatsServer } from "./nats-server.ts";

export interface RoleServer {
  readonly url: string;
  /** Every user's password. */
  readonly password: string;
  /** A runtime connected as `user`, with that user's role; stopped by `stop()`. */
  /** A runtime of the user, stopped with the server; `logger`: its log (silent by default). */
  runtimeAs(user: string, logger?: Logger): Promise<Runtime>;
  /** The violations the server logged so far. */
  violations(): ReturnType<typeof loggedViolations>;
  /** The server back on its port with an empty store, and its users (its config file kept). */
  restartEmpty(): Promise<void>;
  stop(): Promise<void>;
}

export const startRoleServer = async (
  users: Record<string, PermissionsRequest>,
  options: Pick<RuntimeOptions, "prefix" | "jobs" | "connection">,
  /** Users beside the roles' (their config entries), given every permission by the test. */
  extraUsers: (password: string) => readonly string[] = () => [],
): Promise<RoleServer> => {
  const password = "s3cret-for-tests";
  const files = await authFiles();
  const logFile = path.join(files.dir, "server.log");
  const config = roleUsersConfig(logFile, password, users, [...extraUsers(password)]);
  const server = await startNatsServer({ args: ["-c", await files.file("users.conf", config)] });
  const runtimes: Runtime[] = [];
  return {
    url: server.url,
    password,
    async runtimeAs(user, logger = silentLogger()) {
      const rt = await createRuntime({
        ...options,
        servers: server.url,
        auth: { user, pass: password },
        roles: users[user]?.role,
        name: user,
        logger,
      });
      runtimes.push(rt);
      return rt;
    },
    violations: () => loggedViolations(logFile),
    restartEmpty: () => server.restartEmpty(),
    async stop() {
      await Promise.allSettled(runtimes.map((rt) => rt.stop()));
      await server.dispose();
      await files.remove();
    },
  };
};
