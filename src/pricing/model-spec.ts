import { z } from "zod";

/**
 * How a model is declared (built in, or in PRICES_FILE), apart from the catalog that reads it, so the
 * built-in list and the catalog each import it and not each other.
 */

export type Encoding = "o200k_base" | "cl100k_base";

const decimal = z.string().regex(/^\d+(\.\d{1,6})?$/, "a USD decimal per 1M tokens with at most 6 decimals");

export const pricesSchema = z.object({
  input: decimal,
  cachedInput: decimal,
  cacheWrite: decimal.optional(),
  output: decimal,
});

const providerSchema = z.enum(["openai", "openrouter", "relace"]);

/**
 * Another way to reach the same model, tried when the model's own route fails before the first
 * byte (e.g. OpenAI direct, then OpenRouter's `openai/…`). Its prices default to the model's.
 */
const fallbackSchema = z.object({
  provider: providerSchema,
  upstreamModel: z.string().min(1),
  prices: pricesSchema.optional(),
});

export const modelSpecSchema = z.object({
  id: z.string().min(1),
  aliases: z.array(z.string().min(1)).default([]),
  provider: providerSchema,
  upstreamModel: z.string().min(1),
  ownedBy: z.string().min(1),
  contextWindow: z.number().int().positive(),
  maxOutput: z.number().int().positive(),
  encoding: z.enum(["o200k_base", "cl100k_base"]).default("o200k_base"),
  prices: pricesSchema,
  /** Fallback routes in the order they are tried; optional so a price override keeps them. */
  fallbacks: z.array(fallbackSchema).optional(),
});

/** A model as declared: prices per 1M tokens as exact decimal strings. */
export type ModelSpec = z.input<typeof modelSpecSchema>;
