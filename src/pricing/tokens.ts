import { countTokens as countCl100k } from "gpt-tokenizer/encoding/cl100k_base";
import { countTokens as countO200k } from "gpt-tokenizer/encoding/o200k_base";
import type { Encoding } from "./catalog.ts";

/**
 * Token counts for calls whose upstream reported no usage (an interrupted stream, a client that
 * went away, a provider without a usage frame). gpt-tokenizer gives the same tokens as tiktoken
 * (the tests compare them) at about a tenth of the time per message and without WASM, measured with
 * `npx tsx bench/tokenizers.ts`. Special-token text in user content counts as plain text, as the
 * provider sees it.
 */
const PLAIN = { disallowedSpecial: new Set<string>() };

export function countTextTokens(text: string, encoding: Encoding): number {
  if (text.length === 0) return 0;
  return encoding === "cl100k_base" ? countCl100k(text, PLAIN) : countO200k(text, PLAIN);
}

/** OpenAI's chat accounting: 3 tokens per message, 1 more for a name, 3 to prime the reply. */
const PER_MESSAGE = 3;
const PER_NAME = 1;
const REPLY_PRIMING = 3;

export function countChatPromptTokens(
  messages: ReadonlyArray<Record<string, unknown>>,
  encoding: Encoding,
): number {
  let total = REPLY_PRIMING;
  for (const message of messages) {
    total += PER_MESSAGE;
    for (const [key, value] of Object.entries(message)) {
      if (key === "content") total += countTextTokens(contentText(value), encoding);
      else if (typeof value === "string") total += countTextTokens(value, encoding);
      if (key === "name") total += PER_NAME;
    }
  }
  return total;
}

/** The text of a message's content: a string, or the text parts of an array of parts. */
function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  let text = "";
  for (const part of content) {
    if (typeof part === "object" && part !== null && typeof (part as { text?: unknown }).text === "string") {
      text += (part as { text: string }).text;
    }
  }
  return text;
}
