import { connect } from "@nats-io/transport-node";
import { httpGetJson } from "./nats-process.ts";

/** The reply prefixes (`_INBOX.<id>.`) of the client named `name`: its request inboxes, as the server's /connz lists them. */
const inboxesOf = async (monitorUrl: string, name: string): Promise<string[]> => {
  const connz = (await httpGetJson(`${monitorUrl}/connz?subs=1`)) as {
    connections?: Array<{ name?: string; subscriptions_list?: string[] }>;
  };
  const client = connz.connections?.find((c) => c.name === name);
  if (!client) throw new Error(`no client named ${name} on the server`);
  const inboxes = (client.subscriptions_list ?? []).filter(
    (s) => s.startsWith("_INBOX.") && s.endsWith(".*"),
  );
  if (inboxes.length === 0) throw new Error(`client ${name} has made no request yet`);
  return inboxes.map((s) => s.slice(0, -1));
};

/**
 * The requests one client sends on `subject` (a JetStream API subject, such
 * as `$JS.API.STREAM.NAMES`), counted as they pass on the server: a
 * subscription of the test's own, each request told from other clients'
 * by its reply inbox. The client is named by its connection name (a
 * runtime's `name`) and must have made a request already. `close()` ends it.
 */
export const requestsOf = async (servers: string, monitorUrl: string, client: string, subject: string) => {
  const inboxes = await inboxesOf(monitorUrl, client);
  const nc = await connect({ servers, name: "raw-api-requests" });
  let count = 0;
  const sub = nc.subscribe(subject, {
    callback: (_error, m) => {
      if (m.reply && inboxes.some((inbox) => m.reply?.startsWith(inbox))) count++;
    },
  });
  await nc.flush();
  return {
    /** Requests seen so far. */
    count: () => count,
    close: async () => {
      sub.unsubscribe();
      await nc.close();
    },
  };
};
