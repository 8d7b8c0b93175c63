/**
 * The mock's `GET /openrouter/v1/models`: OpenRouter's list in its real shape (prices in USD per
 * token as decimal strings, `top_provider.max_completion_tokens`, the fields a client ignores
 * included), with every model the Planto server sends, the gateway's built-in OpenRouter models, a
 * listed `:free` variant and one of OpenRouter's routers (priced `-1`, which the gateway skips).
 * Prices are the vendors' list prices per 1M tokens, written here per 1M for the reader.
 */
interface Listed {
  id: string;
  name: string;
  context: number;
  maxOutput: number | null;
  /** USD per 1M tokens: input, output, cache read, cache write. */
  prices: [string, string, string?, string?];
}

const LISTED: Listed[] = [
  m("anthropic/claude-3.5-haiku", "Anthropic: Claude 3.5 Haiku", 200_000, 8_192, ["0.8", "4", "0.08", "1"]),
  m("anthropic/claude-3.5-sonnet", "Anthropic: Claude 3.5 Sonnet", 200_000, 8_192, [
    "3",
    "15",
    "0.3",
    "3.75",
  ]),
  m("anthropic/claude-3.7-sonnet", "Anthropic: Claude 3.7 Sonnet", 200_000, 64_000, [
    "3",
    "15",
    "0.3",
    "3.75",
  ]),
  m("anthropic/claude-opus-4", "Anthropic: Claude Opus 4", 200_000, 32_000, ["15", "75", "1.5", "18.75"]),
  m("anthropic/claude-sonnet-4", "Anthropic: Claude Sonnet 4", 200_000, 64_000, ["3", "15", "0.3", "3.75"]),
  m("deepseek/deepseek-chat-v3", "DeepSeek: DeepSeek V3", 163_840, 16_384, ["0.27", "1.1", "0.07"]),
  m("deepseek/deepseek-chat-v3-0324", "DeepSeek: DeepSeek V3 0324", 163_840, 16_384, ["0.27", "1.1", "0.07"]),
  m("deepseek/deepseek-r1", "DeepSeek: R1", 163_840, 32_768, ["0.55", "2.19", "0.14"]),
  m("deepseek/deepseek-r1-0528", "DeepSeek: R1 0528", 163_840, 32_768, ["0.5", "2.15"]),
  m("deepseek/deepseek-r1:free", "DeepSeek: R1 (free)", 163_840, null, ["0", "0"]),
  m("google/gemini-2.5-flash", "Google: Gemini 2.5 Flash", 1_048_576, 65_535, ["0.3", "2.5", "0.075"]),
  m("google/gemini-2.5-pro", "Google: Gemini 2.5 Pro", 1_048_576, 65_536, ["1.25", "10", "0.31"]),
  m("google/gemini-pro-1.5", "Google: Gemini 1.5 Pro", 2_000_000, 8_192, ["1.25", "5"]),
  m("mistral/devstral-small", "Mistral: Devstral Small", 128_000, null, ["0.07", "0.28"]),
  m("openai/gpt-4.1", "OpenAI: GPT-4.1", 1_047_576, 32_768, ["2", "8", "0.5"]),
  m("openai/gpt-4.1-mini", "OpenAI: GPT-4.1 Mini", 1_047_576, 32_768, ["0.4", "1.6", "0.1"]),
  m("openai/gpt-4.1-nano", "OpenAI: GPT-4.1 Nano", 1_047_576, 32_768, ["0.1", "0.4", "0.025"]),
  m("openai/o3", "OpenAI: o3", 200_000, 100_000, ["2", "8", "0.5"]),
  m("openai/o4-mini", "OpenAI: o4 Mini", 200_000, 100_000, ["1.1", "4.4", "0.275"]),
  m("perplexity/r1-1776", "Perplexity: R1 1776", 128_000, null, ["2", "8"]),
  m("perplexity/sonar-reasoning", "Perplexity: Sonar Reasoning", 127_000, null, ["1", "5"]),
  m("qwen/qwen-2.5-coder-32b-instruct", "Qwen2.5 Coder 32B Instruct", 32_768, 16_384, ["0.06", "0.15"]),
  m("qwen/qwen3-14b", "Qwen: Qwen3 14B", 40_960, 40_960, ["0.06", "0.24"]),
  m("qwen/qwen3-235b-a22b", "Qwen: Qwen3 235B A22B", 40_960, 40_960, ["0.13", "0.6"]),
  m("qwen/qwen3-32b", "Qwen: Qwen3 32B", 40_960, 40_960, ["0.1", "0.3"]),
  m("qwen/qwen3-8b", "Qwen: Qwen3 8B", 128_000, 20_000, ["0.035", "0.138"]),
];

function m(id: string, name: string, context: number, maxOutput: number | null, prices: Listed["prices"]) {
  return { id, name, context, maxOutput, prices };
}

/** USD per 1M tokens → USD per token, exactly, as OpenRouter writes it ("0.000003"). */
export function perToken(perMillion: string): string {
  const [whole = "0", frac = ""] = perMillion.split(".");
  const digits = `${whole}${frac}`.replace(/^0+/, "");
  if (!digits) return "0";
  const scale = frac.length + 6;
  const padded = digits.padStart(scale + 1, "0");
  const int = padded.slice(0, padded.length - scale);
  const fraction = padded.slice(padded.length - scale).replace(/0+$/, "");
  return fraction ? `${int}.${fraction}` : int;
}

const CREATED = 1_700_000_000;

/** The list's JSON body. */
export function openRouterModelList(): string {
  const data = LISTED.map((x) => {
    const [input, output, cacheRead, cacheWrite] = x.prices;
    return {
      id: x.id,
      canonical_slug: x.id,
      hugging_face_id: "",
      name: x.name,
      created: CREATED,
      description: `${x.name}, as the mock upstream lists it.`,
      context_length: x.context,
      architecture: {
        modality: "text->text",
        input_modalities: ["text"],
        output_modalities: ["text"],
        tokenizer: "Other",
        instruct_type: null,
      },
      pricing: {
        prompt: perToken(input),
        completion: perToken(output),
        request: "0",
        image: "0",
        web_search: "0",
        internal_reasoning: "0",
        ...(cacheRead ? { input_cache_read: perToken(cacheRead) } : {}),
        ...(cacheWrite ? { input_cache_write: perToken(cacheWrite) } : {}),
      },
      top_provider: { context_length: x.context, max_completion_tokens: x.maxOutput, is_moderated: false },
      per_request_limits: null,
      supported_parameters: ["max_tokens", "temperature", "tools", "tool_choice", "reasoning", "stop"],
    };
  });
  data.push({
    ...(data[0] as (typeof data)[number]),
    id: "openrouter/auto",
    canonical_slug: "openrouter/auto",
    name: "Auto Router",
    pricing: { ...(data[0] as (typeof data)[number]).pricing, prompt: "-1", completion: "-1" },
  });
  return JSON.stringify({ data });
}
