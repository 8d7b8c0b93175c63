/** The usage object of a streamed answer's usage frame (with the gateway's `cost`, in USD), if any. */
export function streamedUsage(text: string): { completion_tokens: number; cost: number } | undefined {
  return text
    .split("\n")
    .filter((l) => l.startsWith("data: {"))
    .map((l) => JSON.parse(l.slice(6)) as { usage?: { completion_tokens: number; cost: number } })
    .find((f) => f.usage)?.usage;
}

/** A streamed call that asks for its usage frame: 20 output tokens from the mock upstream. */
export const STREAMED_CALL = {
  model: "gpt-4.1",
  messages: [{ role: "user", content: "hi" }],
  stream: true,
  stream_options: { include_usage: true },
  mock: { chunks: 20, delayMs: 2 },
};
