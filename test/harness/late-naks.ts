import type { Consumer, JsMsg } from "@nats-io/jetstream";
import type { TaskLeasing } from "../../src/adapters/task-leasing.ts";
import type { tcpProxy } from "./tcp-proxy.ts";
import { waitUntil } from "./wait.ts";

type Settle = TaskLeasing["settle"];

/**
 * `settle` with its naks held past their deliveries' lease (2 s): the
 * connection is cut through `proxy` as a nak is to go out, the nak is
 * asked for (it waits for the connection), another client takes the task
 * from `consumer` once the lease ends at the server (`second`), and the
 * connection comes back. `thirdWhileKept` tells which delivery a third
 * client gets while the second keeps its own (none, unless a late nak
 * handed it back).
 */
export const lateNaks = (
  settle: Settle,
  proxy: Awaited<ReturnType<typeof tcpProxy>>,
  connected: () => boolean,
  consumer: Consumer,
) => {
  const notAfters: Array<number | undefined> = [];
  let second = null as JsMsg | null;
  const late: Settle = async (settles, notAfter) => {
    if (!settles.some((s) => s.action === "nak")) return settle(settles, notAfter);
    notAfters.push(notAfter);
    proxy.cut();
    await waitUntil(() => !connected(), { timeoutMs: 5000, message: "cut" });
    const sent = settle(settles, notAfter);
    // Delivered to it once the lease ends at the server (2 s), not before: the sign it ended.
    second = await consumer.next({ expires: 6000 });
    second?.working();
    proxy.restore();
    await sent;
  };
  const thirdWhileKept = async (): Promise<number | null> => {
    const keeping = setInterval(() => second?.working(), 500);
    try {
      return (await consumer.next({ expires: 2500 }))?.info.deliveryCount ?? null;
    } finally {
      clearInterval(keeping);
    }
  };
  return { settle: late, notAfters, second: () => second, thirdWhileKept };
};
