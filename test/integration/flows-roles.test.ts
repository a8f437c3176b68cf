/**
 * Flows with least privilege: a nats-server whose users have exactly the
 * permissions `natsPermissions()` gives their roles. An admin provisions, a
 * submitter submits a flow (and drives it: stepping a flow submits jobs), a
 * supervisor supervises, one worker per queue answers. The oracles: the
 * server's own log of permission violations (none), and the handlers' ledger.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PermissionsRequest } from "../../src/api/permissions.ts";
import { RoleNotHeld } from "../../src/kernel/errors.ts";
import { type RoleServer, startRoleServer } from "../harness/role-server.ts";

const prefix = "permf";
const users: Record<string, PermissionsRequest> = {
  admin: { role: "admin", queues: ["A", "B"], prefix },
  submitter: { role: "submitter", queues: ["A", "B"], prefix },
  supervisor: { role: "supervisor", queues: ["A", "B"], prefix },
  workerA: { role: "worker", queues: ["A"], prefix },
  workerB: { role: "worker", queues: ["B"], prefix },
};

describe("flows with each role's permissions only", () => {
  let roles: RoleServer;
  const runtimeAs = (user: keyof typeof users) => roles.runtimeAs(user);

  beforeAll(async () => {
    roles = await startRoleServer(users, {
      prefix,
      connection: { operationTimeoutMs: 4000, retry: { attempts: 1 } },
      jobs: { leaseMs: 1000 },
    });
  });
  afterAll(async () => {
    await roles?.stop();
  });

  it("a parent on B after two children on A: no permission violation", async () => {
    const admin = await runtimeAs("admin");
    await admin.admin.provision(["A", "B"]);
    await runtimeAs("supervisor");
    const submitter = await runtimeAs("submitter");
    const workerA = await runtimeAs("workerA");
    const workerB = await runtimeAs("workerB");
    await expect(workerA.flows.submit({ jobs: { a: { queue: "A", tasks: [1] } } })).rejects.toBeInstanceOf(
      RoleNotHeld,
    );
    const ledger: string[] = [];
    workerA.workers.start<number, number>({
      queue: "A",
      handler: (task) => {
        ledger.push(`A ${task.payload}`);
        return task.payload * 10;
      },
    });
    workerB.workers.start<number, number>({
      queue: "B",
      handler: () => {
        ledger.push("B parent");
        return 0;
      },
    });
    const flow = await submitter.flows.submit({
      parent: { queue: "B", tasks: [0] },
      children: [
        { queue: "A", tasks: [1, 2] },
        { queue: "A", tasks: [3] },
      ],
    });
    expect((await flow.done()).status).toBe("succeeded");
    expect(ledger.slice(0, 3).sort()).toEqual(["A 1", "A 2", "A 3"]);
    expect(ledger[3]).toBe("B parent");
    const read = await (await submitter.flows.get(flow.id))?.done();
    expect(read?.status).toBe("succeeded");
    expect(await roles.violations()).toEqual([]);
  });
});
