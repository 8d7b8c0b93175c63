import type { Encoding } from "./catalog.ts";

/**
 * Token counts for calls whose upstream reported no usage (an interrupted stream, a client that
 * went away, a provider without a usage frame). gpt-tokenizer gives the same tokens as tiktoken
 * (the tests compare them) at about a tenth of the time per message and without WASM, measured with
 * `npx tsx bench/tokenizers.ts`. Special-token text in user content counts as plain text, as the
 * provider sees it.
 */
const PLAIN = { disallowedSpecial: new Set<string>() };

/** Counts tokens of one encoding. */
export interface TokenCounter {
  text(text: string): number;
  /** A chat request's prompt, as OpenAI counts it. */
  chat(messages: ReadonlyArray<Record<string, unknown>>): number;
}

type CountTokens = (text: string, options: typeof PLAIN) => number;
const counters = new Map<Encoding, Promise<TokenCounter>>();

/**
 * The counter of an encoding, loaded on first use: an encoding's tables take 40-60 MB, and most
 * calls report their usage and never need one. The first call that does waits for the load once
 * (about 150 ms); concurrent first calls share it.
 */
export function tokenCounter(encoding: Encoding): Promise<TokenCounter> {
  let counter = counters.get(encoding);
  if (!counter) {
    const module =
      encoding === "cl100k_base"
        ? import("gpt-tokenizer/encoding/cl100k_base")
        : import("gpt-tokenizer/encoding/o200k_base");
    counter = module.then((m) => counterOf(m.countTokens as CountTokens));
    counter.catch(() => counters.delete(encoding));
    counters.set(encoding, counter);
  }
  return counter;
}

function counterOf(countTokens: CountTokens): TokenCounter {
  const text = (t: string) => (t.length === 0 ? 0 : countTokens(t, PLAIN));
  return { text, chat: (messages) => countChatPromptTokens(messages, text) };
}

/** OpenAI's chat accounting: 3 tokens per message, 1 more for a name, 3 to prime the reply. */
const PER_MESSAGE = 3;
const PER_NAME = 1;
const REPLY_PRIMING = 3;

function countChatPromptTokens(
  messages: ReadonlyArray<Record<string, unknown>>,
  countText: (text: string) => number,
): number {
  let total = REPLY_PRIMING;
  for (const message of messages) {
    total += PER_MESSAGE;
    for (const [key, value] of Object.entries(message)) {
      if (key === "content") total += countText(contentText(value));
      else if (typeof value === "string") total += countText(value);
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
