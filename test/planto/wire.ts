/**
 * What the two real Planto clients send, from ../shared/PLANTO-WIRE.md: the model names the server
 * uses per provider, and the body of one of its calls. Shared by the TypeScript tests and the Go
 * client (which gets the names on its command line).
 */
export const OPENAI_MODELS = ["gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini"];

export const OPENROUTER_MODELS = [
  "anthropic/claude-3.5-haiku",
  "anthropic/claude-3.5-sonnet",
  "anthropic/claude-3.7-sonnet",
  "anthropic/claude-opus-4",
  "anthropic/claude-sonnet-4",
  "deepseek/deepseek-chat-v3",
  "deepseek/deepseek-r1-0528",
  "google/gemini-2.5-flash",
  "google/gemini-2.5-pro",
  "google/gemini-pro-1.5",
  "mistral/devstral-small",
  "openai/gpt-4.1",
  "openai/gpt-4.1-mini",
  "openai/gpt-4.1-nano",
  "openai/o3",
  "openai/o4-mini",
  "perplexity/r1-1776",
  "perplexity/sonar-reasoning",
  "qwen/qwen-2.5-coder-32b-instruct",
  "qwen/qwen3-14b",
  "qwen/qwen3-235b-a22b",
  "qwen/qwen3-32b",
  "qwen/qwen3-8b",
];

/** The server appends `:nitro` to OpenRouter names unless they end in `:nitro`, `:free` or `:floor`. */
export const withNitro = (name: string) => (/:(nitro|free|floor)$/.test(name) ? name : `${name}:nitro`);

const tools = [
  {
    type: "function",
    function: {
      name: "listReplacements",
      description: "Lists the replacements to make in a file.",
      parameters: {
        type: "object",
        properties: { path: { type: "string" }, count: { type: "integer" } },
        required: ["path", "count"],
      },
    },
  },
];

/** The messages of a server call: arrays of content parts, the long ones marked for the cache. */
function messages(prompt: string) {
  return [
    {
      role: "system",
      content: [
        { type: "text", text: "You are Planto, an AI coding agent.", cache_control: { type: "ephemeral" } },
      ],
    },
    {
      role: "user",
      content: [
        { type: "text", text: "Context: src/main.go\n\npackage main", cache_control: { type: "ephemeral" } },
        { type: "text", text: prompt },
      ],
    },
  ];
}

/**
 * A server call's body, field for field: streaming only, usage asked for, no max_tokens; OpenAI
 * gets `prediction` and `reasoning_effort`, the others `reasoning` and `provider`.
 */
export function serverBody(
  provider: "openai" | "openrouter",
  model: string,
  extra: Record<string, unknown> = {},
) {
  const common = {
    model,
    messages: messages(`Implement the plan for ${model}.`),
    stream: true,
    stream_options: { include_usage: true },
    temperature: 0.3,
    top_p: 0.9,
    stop: ["<PlantoFinish/>"],
    tools,
    tool_choice: "auto",
  };
  if (provider === "openai") {
    return {
      ...common,
      prediction: { type: "content", content: "package main\n" },
      reasoning_effort: "high",
      ...extra,
    };
  }
  return {
    ...common,
    reasoning: { effort: "high", max_tokens: 8000, exclude: false },
    provider: { order: ["Anthropic", "Google"], allow_fallbacks: true, require_parameters: true },
    ...extra,
  };
}

/** The OpenRouter headers the server sends. */
export const OPENROUTER_CLIENT_HEADERS = {
  "HTTP-Referer": "https://plandex.ai",
  "X-Title": "Planto",
  "X-OR-Prefer": "ttft,throughput",
  "X-OR-Region": "us-east",
};
