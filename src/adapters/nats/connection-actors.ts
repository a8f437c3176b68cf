import { fromCallback, fromPromise } from "xstate";
import type { ConnectionEvent } from "../../machines/connection.machine.ts";
import type { NatsClients } from "./nats-clients.ts";

/** The I/O half of the connection machine, provided with `.provide({ actors })`. */
export const connectionActors = (clients: NatsClients) => ({
  connect: fromPromise<{ clientId: number }, { generation: number }>(async ({ signal }) => ({
    clientId: await clients.connect(signal),
  })),
  watch: fromCallback<ConnectionEvent, { clientId: number }>(({ input, sendBack }) =>
    clients.watch(input.clientId, sendBack),
  ),
  closeClient: fromPromise<void, { clientId: number | null }>(({ input }) => clients.close(input.clientId)),
  drainClient: fromPromise<void, { clientId: number | null }>(({ input }) => clients.drain(input.clientId)),
});
