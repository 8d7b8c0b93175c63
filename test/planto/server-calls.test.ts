import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";
import {
  OPENAI_MODELS,
  OPENROUTER_CLIENT_HEADERS,
  OPENROUTER_MODELS,
  serverBody,
  withNitro,
} from "./wire.ts";

/**
 * The Planto server's model calls, as it really makes them, through the provider-scoped base URLs:
 * every model name it sends, with its headers and body, read the way it reads a stream (it closes
 * at the first chunk that carries usage, so it may never see [DONE]).
 */

const MARKUP_BPS = 2000n;
const PROMPT = 1200;
const CACHED = 200;
const COMPLETION = 40;
const OPENROUTER_COST = 0.0012345;

type Json = Record<string, unknown>;
type ModelEntry = { id: string; pricing: { input: string; cached_input: string; output: string } };

const micro = (usdPerMillion: string) => {
  const [whole = "0", frac = ""] = usdPerMillion.split(".");
  return BigInt(whole) * 1_000_000n + BigInt(frac.padEnd(6, "0"));
};
const ceilDiv = (a: bigint, b: bigint) => (a + b - 1n) / b;
const usd = (nanos: bigint) => {
  const s = nanos.toString().padStart(10, "0");
  const frac = s.slice(-9).replace(/0+$/, "");
  return `${s.slice(0, -9).replace(/^0+(?=\d)/, "")}${frac ? `.${frac}` : ""}`;
};

/** Reads an SSE body as the server does; stops and closes at the first chunk carrying usage. */
async function readLikeTheServer(
  res: Response,
): Promise<{ frames: Json[]; usage: Json | undefined; sawDone: boolean }> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  const frames: Json[] = [];
  let buffer = "";
  let sawDone = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { frames, usage: undefined, sawDone };
    buffer += decoder.decode(value, { stream: true });
    let nl = buffer.indexOf("\n");
    while (nl >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      nl = buffer.indexOf("\n");
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") {
        sawDone = true;
        continue;
      }
      let frame: Json;
      try {
        frame = JSON.parse(data) as Json;
      } catch {
        continue; // the server drops what it cannot parse
      }
      frames.push(frame);
      if (typeof frame.usage === "object" && frame.usage !== null) {
        await reader.cancel();
        return { frames, usage: frame.usage as Json, sawDone };
      }
    }
  }
}

describe("the Planto server's calls through the provider-scoped base URLs", () => {
  let gw: TestGateway;
  let org: TestOrg;
  const expected = new Map<
    string,
    { provider: string; name: string; base: bigint; total: bigint; discounted: boolean }
  >();

  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis", env: { MARKUP_BPS: String(MARKUP_BPS) } });
    org = await gw.org({ credits: "50" });
  });
  afterAll(() => gw?.close());

  const call = (base: string, body: Json, headers: Record<string, string> = {}) =>
    fetch(`${gw.url}${base}/chat/completions`, {
      method: "POST",
      headers: {
        accept: "text/event-stream",
        authorization: `Bearer ${org.key}`,
        "content-type": "application/json",
        "x-planto-plan-id": "plan-1",
        "x-planto-purpose": "implementation",
        ...headers,
      },
      body: JSON.stringify(body),
    });

  /** One call as the server makes it; checks what the upstream got and what the client read. */
  async function serverCall(provider: "openai" | "openrouter", model: string, tag: string) {
    const usage =
      provider === "openai"
        ? { prompt_tokens: PROMPT, cached_tokens: CACHED, completion_tokens: COMPLETION }
        : {
            prompt_tokens: PROMPT,
            cached_tokens: CACHED,
            completion_tokens: COMPLETION,
            cost: OPENROUTER_COST,
          };
    // `mock` steers the mock upstream; the gateway passes it through like any field it does not know.
    const body = serverBody(provider, model, { mock: { tag, usage, chunks: 4, doneDelayMs: 300 } });
    const res = await call(
      `/${provider}/v1`,
      body,
      provider === "openrouter" ? OPENROUTER_CLIENT_HEADERS : {},
    );
    expect(res.status, `${model}: ${res.status}`).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const read = await readLikeTheServer(res);
    expect(read.usage, model).toBeDefined();
    expect(read.sawDone, `${model}: [DONE] is held back past the usage chunk`).toBe(false);
    // The tools the body offers come back as a streamed call.
    const toolCall = read.frames
      .flatMap((f) => (f.choices as Json[] | undefined) ?? [])
      .flatMap((c) => ((c.delta as Json | undefined)?.tool_calls as Json[] | undefined) ?? []);
    expect(toolCall[0]).toMatchObject({ function: { name: "listReplacements" } });

    const upstream = await gw.mock.waitForRequest(tag);
    // Byte for byte what the client sent: nothing to add to a body that asks for usage already.
    expect(upstream.raw.toString("utf8")).toBe(JSON.stringify(body));
    expect(upstream.path).toBe(`/${provider}/v1/chat/completions`);
    expect(upstream.headers.authorization).toBe(
      provider === "openai" ? "Bearer sk-openai-integrated" : "Bearer sk-or-integrated",
    );
    expect(Object.keys(upstream.headers).filter((h) => h.startsWith("x-planto"))).toEqual([]);
    if (provider === "openrouter") {
      for (const [name, value] of Object.entries(OPENROUTER_CLIENT_HEADERS)) {
        expect(upstream.headers[name.toLowerCase()], name).toBe(value);
      }
    }
    return read.usage as Json;
  }

  it("streams every OpenAI model on /openai/v1 and every OpenRouter model with :nitro on /openrouter/v1, priced", async () => {
    const listed = async (base: string) =>
      ((await (await fetch(`${gw.url}${base}/models`)).json()) as { data: ModelEntry[] }).data;
    const openaiPrices = new Map((await listed("/openai/v1")).map((m) => [m.id, m.pricing]));
    const openrouterPrices = new Map((await listed("/openrouter/v1")).map((m) => [m.id, m.pricing]));

    for (const model of OPENAI_MODELS) {
      const usage = await serverCall("openai", model, `oa-${model}`);
      const price = openaiPrices.get(model);
      if (!price) throw new Error(`${model} is not listed on /openai/v1/models`);
      const picos =
        BigInt(PROMPT - CACHED) * micro(price.input) +
        BigInt(CACHED) * micro(price.cached_input) +
        BigInt(COMPLETION) * micro(price.output);
      const base = ceilDiv(picos, 1000n);
      const total = base + ceilDiv(base * MARKUP_BPS, 10_000n);
      expect(usage.cost, model).toBe(Number(usd(total)));
      const discounted = micro(price.cached_input) < micro(price.input);
      expected.set(`openai ${model}`, {
        provider: "openai",
        name: model,
        base,
        total,
        discounted,
      });
    }
    for (const name of OPENROUTER_MODELS) {
      const price = openrouterPrices.get(name);
      if (!price) throw new Error(`${name} is not listed on /openrouter/v1/models`);
      const model = withNitro(name);
      const usage = await serverCall("openrouter", model, `or-${name.replace("/", "-")}`);
      // OpenRouter's own charge is the base; the markup goes on top.
      const base = BigInt(Math.round(OPENROUTER_COST * 1e9));
      const total = base + ceilDiv(base * MARKUP_BPS, 10_000n);
      expect(usage.cost, model).toBe(Number(usd(total)));
      const discounted = micro(price.cached_input) < micro(price.input);
      expected.set(`openrouter ${name}`, {
        provider: "openrouter",
        name,
        base,
        total,
        discounted,
      });
    }
    expect(expected.size).toBe(OPENAI_MODELS.length + OPENROUTER_MODELS.length);
  });

  it("debits each of those calls once, at the reported usage, in the CLI's terms", async () => {
    expect(expected.size).toBeGreaterThan(0);
    await expect.poll(() => gw.services.calls.size, { timeout: 10_000 }).toBe(0);
    await gw.services.flusher.drain();
    const res = await fetch(`${gw.url}/billing/credits_transactions?size=500&page=1`, {
      method: "POST",
      headers: { authorization: `Bearer ${org.key}`, "content-type": "application/json" },
      body: JSON.stringify({
        transactionType: "debit",
        planId: "",
        sessionId: "",
        dayStart: null,
        month: false,
      }),
    });
    expect(res.status).toBe(200);
    const log = (await res.json()) as { transactions: Json[]; numPagesMax: boolean };
    expect(log.numPagesMax).toBe(false);
    expect(log.transactions).toHaveLength(expected.size);
    let spent = 0n;
    for (const row of log.transactions) {
      const key = `${row.debitModelProvider} ${row.debitModelName}`;
      const want = expected.get(key);
      expect(want, `unexpected debit ${key}`).toBeDefined();
      if (!want) continue;
      expect(row).toMatchObject({
        amount: usd(want.total),
        debitBaseAmount: usd(want.base),
        debitSurcharge: usd(want.total - want.base),
        debitInputTokens: PROMPT,
        debitOutputTokens: COMPLETION,
        debitPurpose: "implementation",
        debitPlanId: "plan-1",
      });
      // Present only when the cached tokens saved something (the CLI prints any value, zero too).
      if (want.discounted) expect(row.debitCacheDiscount, key).toMatch(/^0\.\d*[1-9]\d*$/);
      else expect(row, key).not.toHaveProperty("debitCacheDiscount");
      spent += want.total;
    }
    expect(new Set(log.transactions.map((t) => `${t.debitModelProvider} ${t.debitModelName}`)).size).toBe(
      expected.size,
    );
    const balance = (await (
      await fetch(`${gw.url}/billing/balance`, { headers: { authorization: `Bearer ${org.key}` } })
    ).json()) as { balance: string };
    expect(balance.balance).toBe(usd(50_000_000_000n - spent));
  });

  it("refuses a model OpenRouter does not list, and names each provider's models under its base URL", async () => {
    const unlisted = await call("/openrouter/v1", serverBody("openrouter", "acme/never-listed:nitro"));
    expect(unlisted.status).toBe(404);
    expect(unlisted.headers.get("content-type")).toBe("application/json");
    expect(((await unlisted.json()) as { type: string }).type).toBe("model_not_found");
    // Planto's ids are not OpenAI's names.
    expect((await call("/openai/v1", serverBody("openai", "openai/gpt-4.1"))).status).toBe(404);
    const relace = (await (await fetch(`${gw.url}/relace/v1/models`)).json()) as { data: ModelEntry[] };
    expect(relace.data.map((m) => m.id)).toEqual(["relace-apply-3"]);
  });

  it("applies code on /relace/v1 with Relace's own body", async () => {
    const res = await gw.post("/relace/v1/code/apply", org.key, {
      initialCode: "a\n",
      editSnippet: "b\n",
      mock: { tag: "relace-apply" },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { mergedCode: string }).mergedCode).toBe("a\n\nb\n");
    expect((await gw.mock.waitForRequest("relace-apply")).path).toBe("/relace/v1/code/apply");
  });

  it("forwards a BYO org's OpenAI-Organization and OpenAI-Project, never its key's header or the tags", async () => {
    const byo = await gw.org({ billingMode: "byo" });
    const res = await fetch(`${gw.url}/openai/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${byo.key}`,
        "content-type": "application/json",
        "x-planto-provider-key": "sk-user-own",
        "x-planto-plan-id": "p",
        "OpenAI-Organization": "org-user",
        "OpenAI-Project": "proj-user",
        "HTTP-Referer": "https://example.com",
      },
      body: JSON.stringify({
        model: "gpt-4.1-mini",
        messages: [{ role: "user", content: "hi" }],
        mock: { tag: "byo-h" },
      }),
    });
    expect(res.status).toBe(200);
    const upstream = await gw.mock.waitForRequest("byo-h");
    expect(upstream.headers.authorization).toBe("Bearer sk-user-own");
    expect(upstream.headers["openai-organization"]).toBe("org-user");
    expect(upstream.headers["openai-project"]).toBe("proj-user");
    expect(upstream.headers["http-referer"]).toBeUndefined(); // OpenRouter's header, not OpenAI's
    expect(Object.keys(upstream.headers).filter((h) => h.startsWith("x-planto"))).toEqual([]);

    // An integrated org's OpenAI account is the gateway's: its scoping headers stay here.
    await call(
      "/openai/v1",
      { model: "gpt-4.1-mini", messages: [{ role: "user", content: "hi" }], mock: { tag: "int-h" } },
      {
        "OpenAI-Organization": "org-user",
      },
    );
    expect((await gw.mock.waitForRequest("int-h")).headers["openai-organization"]).toBeUndefined();
  });
});
