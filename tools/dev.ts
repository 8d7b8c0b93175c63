import { serve } from "@hono/node-server";
import { parseConfig } from "../src/config.ts";
import { createApp } from "../src/gateway/app.ts";
import { createNodeServices } from "../src/node-services.ts";
import { startMockUpstream } from "./mock-upstream/mock-upstream.ts";

/**
 * `npm run dev`: the gateway against a local mock upstream (all three providers), with a demo org
 * that has credits and a key, and a ready-to-paste curl and openai SDK snippet.
 */
const mock = await startMockUpstream({ port: Number(process.env.MOCK_PORT ?? 0) });
const adminToken = process.env.ADMIN_TOKEN ?? "dev-admin-token";
const config = parseConfig({
  LOG_LEVEL: "warn",
  DATA_DIR: "./.data/dev",
  ...process.env,
  ADMIN_TOKEN: adminToken,
  OPENAI_BASE_URL: mock.baseUrls.openai,
  OPENROUTER_BASE_URL: mock.baseUrls.openrouter,
  RELACE_BASE_URL: mock.baseUrls.relace,
});
const services = await createNodeServices(config);
const app = createApp(services);
const server = serve({ fetch: app.fetch, port: config.PORT, hostname: config.HOST });
const base = `http://127.0.0.1:${config.PORT}`;
const admin = (path: string, body?: unknown, headers: Record<string, string> = {}) =>
  app.request(path, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
const org = (await (
  await admin("/admin/orgs", { name: "demo", billingMode: "integrated", isTrial: true })
).json()) as {
  id: string;
};
const key = (await (await admin(`/admin/orgs/${org.id}/api-keys`)).json()) as { key: string };

process.stdout.write(`
planto-gateway (dev) on ${base}, providers mocked at ${mock.url}
demo org ${org.id} with $${config.TRIAL_CREDITS} of trial credits; admin token: ${adminToken}

curl -N ${base}/v1/chat/completions \\
  -H "Authorization: Bearer ${key.key}" -H "Content-Type: application/json" \\
  -d '{"model":"openai/gpt-4.1-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}'

# The providers' drop-in base URLs take their own model names (OpenRouter's with :nitro and co.);
# a request with tools gets a tool call back from the mock.
curl -N ${base}/openrouter/v1/chat/completions \\
  -H "Authorization: Bearer ${key.key}" -H "Content-Type: application/json" -H "X-Title: Planto" \\
  -d '{"model":"qwen/qwen3-32b:nitro","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"getWeather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}'

curl ${base}/billing/balance -H "Authorization: Bearer ${key.key}"

PLANTO_API_KEY=${key.key} PLANTO_GATEWAY_URL=${base} npx planto-gateway usage --log

node --input-type=module -e '
import OpenAI from "openai";
const client = new OpenAI({ apiKey: "${key.key}", baseURL: "${base}/v1" });
const stream = await client.chat.completions.create({ model: "anthropic/claude-sonnet-4", stream: true,
  messages: [{ role: "user", content: "Hello" }] });
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
console.log();'
`);

const stop = async () => {
  server.close();
  await services.close();
  await mock.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
