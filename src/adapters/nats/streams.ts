import { JetStreamApiError, type JetStreamManager, type StreamInfo } from "@nats-io/jetstream";

/** JetStream durations are nanoseconds. */
export const nanos = (ms: number) => Math.round(ms * 1_000_000);

/**
 * Creates the stream unless it exists. An existing stream is used as it is
 * (another runtime may have made it with other limits), and only looked at:
 * a process allowed to read a stream but not to create one works once it
 * exists. Two runtimes racing to create it both end up using the one that won.
 * Resolves with the stream as it is.
 */
export const ensureStream = async (
  jsm: JetStreamManager,
  config: Parameters<JetStreamManager["streams"]["add"]>[0],
): Promise<StreamInfo> => {
  try {
    return await jsm.streams.info(config.name);
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  try {
    return await jsm.streams.add(config);
  } catch (error) {
    // Lost the race to a runtime with other settings: theirs stands.
    return await jsm.streams.info(config.name).catch(() => Promise.reject(error));
  }
};

/** Stream, consumer or message not found. */
export const isNotFound = (error: unknown): boolean =>
  error instanceof JetStreamApiError &&
  (error.code === 10014 || error.code === 10059 || error.status === 404);

/** Names of the streams whose name starts with `namePrefix` (one queue's stream each). */
export const streamNamesStartingWith = async (
  jsm: JetStreamManager,
  namePrefix: string,
): Promise<string[]> => {
  const names: string[] = [];
  for await (const name of jsm.streams.names()) if (name.startsWith(namePrefix)) names.push(name);
  return names;
};
