import type { GatewayError } from "../core/errors.ts";
import type { Wire } from "./call.ts";
import type { JsonObject } from "./providers/types.ts";

const SEQUENCE = Buffer.from('"sequence_number":');

/**
 * The Responses API (`/responses`) on the wire. Usage lives on the response object: a plain body is
 * one, and a stream carries it in `response.completed` (or `response.incomplete`) as `response`.
 * A stream has no `[DONE]`: it ends after its terminal event.
 */
export const responsesWire: Wire = {
  readUsage: (provider, payload) => {
    const response = responseOf(payload);
    return response ? provider.readResponsesUsage?.(response) : undefined;
  },
  usageHolder: responseOf,
  /**
   * The API's own `error` event, numbered after the last event the client got, so a client that
   * orders events by `sequence_number` (the AI SDK validates it) takes it as the stream's last.
   */
  errorFrame(err: GatewayError, lastChunk?: Uint8Array): string {
    const error = err.toOpenAi();
    const event = {
      type: "error",
      sequence_number: lastSequence(lastChunk) + 1,
      code: error.code,
      message: error.message,
      param: error.param,
    };
    return `event: error\ndata: ${JSON.stringify(event)}\n\n`;
  },
};

function responseOf(payload: JsonObject): JsonObject | undefined {
  if (payload.object === "response") return payload;
  const response = payload.response;
  return typeof response === "object" && response !== null && !Array.isArray(response)
    ? (response as JsonObject)
    : undefined;
}

/** The last `sequence_number` in a chunk of events; -1 when it holds none. */
function lastSequence(chunk: Uint8Array | undefined): number {
  if (!chunk) return -1;
  const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  const at = bytes.lastIndexOf(SEQUENCE);
  if (at < 0) return -1;
  const digits = /^\s*(\d+)/.exec(bytes.subarray(at + SEQUENCE.length, at + SEQUENCE.length + 24).toString());
  return digits ? Number(digits[1]) : -1;
}
