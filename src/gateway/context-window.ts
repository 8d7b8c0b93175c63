import { GatewayError } from "../core/errors.ts";
import type { CatalogModel } from "../pricing/catalog.ts";
import type { JsonObject } from "./providers/types.ts";

/**
 * UTF-8 bytes per token that real text does not pass on average: BPE tokens of prose are about 4
 * bytes, of code 3-4, of CJK under 3. A prompt with more than `contextWindow × 8` bytes of text
 * cannot fit, so it is refused before it goes upstream (and is charged); anything closer is left to
 * the provider, which counts exactly. No tokenizer runs here: this is a byte count.
 */
const MAX_BYTES_PER_TOKEN = 8;

/** Text bytes of a chat request's messages: strings and text parts (images count by the provider). */
export function chatTextBytes(messages: ReadonlyArray<JsonObject>): number {
  let bytes = 0;
  for (const m of messages) {
    const content = m.content;
    if (typeof content === "string") bytes += Buffer.byteLength(content);
    else if (Array.isArray(content)) {
      for (const part of content) {
        const text = (part as { text?: unknown } | null)?.text;
        if (typeof text === "string") bytes += Buffer.byteLength(text);
      }
    }
  }
  return bytes;
}

/** 400 `context_length_exceeded` when `textBytes` of prompt clearly cannot fit the model's window. */
export function refuseOverContextWindow(model: CatalogModel, textBytes: number, param: string): void {
  const atLeast = Math.floor(textBytes / MAX_BYTES_PER_TOKEN);
  if (atLeast <= model.contextWindow) return;
  throw new GatewayError(
    "context_length_exceeded",
    `the prompt is at least ${atLeast} tokens; '${model.id}' takes at most ${model.contextWindow}`,
    { param },
  );
}
