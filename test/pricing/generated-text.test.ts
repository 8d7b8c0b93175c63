import { describe, expect, it } from "vitest";
import { collectFrameText, collectGeneratedText } from "../../src/pricing/generated-text.ts";

const chunk = (delta: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    created: 1764700000,
    model: "gpt-4.1-mini",
    system_fingerprint: "fp_1",
    choices: [{ index: 0, delta, logprobs: null, finish_reason: null }],
    usage: null,
    ...extra,
  });

const texts = [
  "plain",
  "",
  'quotes " and \\ backslashes \\" and "content":"fake"',
  "new\nlines\tand \u0001 control",
  "ünïcödé — ✓ 日本語 🙂",
  '{"arguments":"nested"}',
];

/** Frames as OpenAI, OpenRouter and Relace send them, and some that must not fool a scan. */
const frames = [
  ...texts.map((t) => chunk({ content: t })),
  ...texts.map((t) => chunk({ role: "assistant", content: t, refusal: null })),
  ...texts.map((t) => chunk({ reasoning: t, reasoning_details: [{ type: "reasoning.text", text: "x" }] })),
  ...texts.map((t) => chunk({ reasoning_content: t })),
  ...texts.map((t) =>
    chunk({
      tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "f", arguments: t } }],
    }),
  ),
  chunk({ content: null }),
  chunk({}, { choices: [] }),
  chunk({ content: "a" }, { logprobs: { content: [{ token: "a", logprob: -0.1 }] } }),
  JSON.stringify({
    object: "chat.completion.chunk",
    choices: [
      { index: 0, delta: { content: "first" } },
      { index: 1, delta: { content: "second" } },
    ],
  }),
  JSON.stringify({ mergedCode: "const a = 1;" }),
  JSON.stringify({ type: "response.output_text.delta", delta: "responses text" }),
  JSON.stringify({ type: "response.function_call_arguments.done", arguments: '{"a":1}' }),
];

describe("the generated text of a stream's frames", () => {
  it("reads a chat chunk's text off its JSON exactly as parsing it finds it", () => {
    for (const frame of frames) {
      const parsed: string[] = [];
      const read: string[] = [];
      collectGeneratedText(frame, parsed);
      collectFrameText(frame, read);
      expect(read, frame).toEqual(parsed);
    }
  });
});
