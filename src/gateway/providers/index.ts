import { openai } from "./openai.ts";
import { openrouter } from "./openrouter.ts";
import { relace } from "./relace.ts";
import type { ProviderAdapter, ProviderName } from "./types.ts";

/** The one registry of providers the gateway can route to. */
export const providers: { readonly [N in ProviderName]: ProviderAdapter & { name: N } } = {
  openai: { ...openai, name: "openai" },
  openrouter: { ...openrouter, name: "openrouter" },
  relace: { ...relace, name: "relace" },
};

export type { ProviderAdapter, ProviderName, Usage } from "./types.ts";
