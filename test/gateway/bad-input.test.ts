import { connect } from "node:net";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/core/log.ts";
import { usageRecords } from "../../src/db/schema/index.ts";
import type { ErrorBody } from "../harness/errors.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

const messages = [{ role: "user", content: "hi" }];

/** The contract's envelope, with a request id, whatever the error. */
async function expectEnvelope(res: Response, status: number, code: string): Promise<ErrorBody> {
  expect(res.headers.get("content-type")).toBe("application/json");
  expect(res.headers.get("x-request-id")).toMatch(/^req_[0-9a-f]{32}$/);
  const body = (await res.json()) as ErrorBody;
  expect({ status: res.status, code: body.error.code }).toEqual({ status, code });
  expect(body.type).toBe(code);
  expect(body.status).toBe(status);
  return body;
}

/**
 * Sends raw HTTP/1.1 bytes and reads the answer to the close: fetch itself refuses what these tests
 * send (thousands of headers, a megabyte in one). Writes on after the server answered, as a client
 * that sends its whole request before reading does.
 */
function rawRequest(
  port: number,
  head: string,
): Promise<{ status: number; headers: string; body: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let error: string | undefined;
    socket.on("data", (d) => chunks.push(d));
    socket.on("error", (err: NodeJS.ErrnoException) => {
      error = err.code ?? err.message;
    });
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const [headers = "", body = ""] = text.split("\r\n\r\n");
      resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(headers)?.[1] ?? 0), headers, body, error });
    });
    socket.write(head);
  });
}

describe("bad input gets its 4xx envelope and changes nothing", () => {
  let gw: TestGateway;
  let org: TestOrg;
  let port: number;
  const logLines: string[] = [];

  beforeAll(async () => {
    gw = await startGateway({ backend: "postgres+redis" });
    gw.services.log = createLogger("info", (line) => logLines.push(line));
    port = Number(new URL(gw.url).port);
    org = await gw.org({ credits: "5" });
  });
  afterAll(() => gw?.close());

  const balance = async () => (await gw.services.store.getBalance(org.id))?.balance;

  it("JSON nested 100,000 levels deep is a 400, not a stack overflow", async () => {
    const before = gw.mock.requests.length;
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    for (const body of [
      `{"model":"openai/gpt-4.1","messages":[{"role":"user","content":"hi"}],"metadata":${deep}}`,
      `{"model":"openai/gpt-4.1","messages":[{"role":"user","content":${deep}}]}`,
    ]) {
      const res = await gw.post("/v1/chat/completions", org.key, body);
      const err = await expectEnvelope(res, 400, "invalid_request_error");
      expect(err.error.message).toContain("nests deeper");
    }
    // Brackets inside strings are text, not nesting.
    const text = "[".repeat(5_000);
    const ok = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1-nano",
      messages: [{ role: "user", content: text }],
    });
    expect(ok.status).toBe(200);
    expect(gw.mock.requests.length).toBe(before + 1);
  });

  it("3,000 headers get a JSON 431, not Node's bare one", async () => {
    const headers = Array.from({ length: 3_000 }, (_, i) => `x-h-${i}: v${i}\r\n`).join("");
    const res = await rawRequest(
      port,
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${org.key}\r\n${headers}content-length: 2\r\n\r\n{}`,
    );
    expect(res.status).toBe(431);
    expect(res.headers.toLowerCase()).toContain("content-type: application/json");
    expect(res.headers.toLowerCase()).toMatch(/x-request-id: req_/);
    const body = JSON.parse(res.body) as ErrorBody;
    expect(body.error.code).toBe("invalid_request_error");
    expect(body.status).toBe(431);
  });

  it("a 1 MB x-planto-plan-id gets the JSON 431, not a reset connection", async () => {
    const before = await balance();
    const res = await rawRequest(
      port,
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${org.key}\r\nx-planto-plan-id: ${"p".repeat(1024 * 1024)}\r\ncontent-length: 2\r\n\r\n{}`,
    );
    expect(res.error).toBeUndefined();
    expect(res.status).toBe(431);
    expect((JSON.parse(res.body) as ErrorBody).error.code).toBe("invalid_request_error");
    expect(await balance()).toBe(before);
  });

  it("an upstream 401 on the gateway's key is a 502 upstream_auth_error; the provider's text is only logged, redacted", async () => {
    const res = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1",
      messages,
      mock: { status: 401 },
    });
    const body = await expectEnvelope(res, 502, "upstream_auth_error");
    const text = JSON.stringify(body);
    expect(text).not.toContain("Incorrect API key");
    expect(text).not.toContain("ated"); // the end of sk-openai-integrated, which OpenAI quotes
    const requestId = res.headers.get("x-request-id");
    const logged = logLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.requestId === requestId && l.msg === "the provider refused the gateway's key");
    expect(logged?.detail).toContain("Incorrect API key provided");
    expect(String(logged?.detail)).not.toContain("ated.");
    expect(JSON.stringify(logged)).not.toContain("sk-openai-integrated");
    expect(
      (await gw.post("/v1/chat/completions", org.key, { model: "gpt-4.1", messages, mock: { status: 403 } }))
        .status,
    ).toBe(502);
  });

  it("a BYO org's 401 is about its own key: it passes through with the provider's text", async () => {
    const byo = await gw.org({ billingMode: "byo" });
    const res = await gw.post(
      "/v1/chat/completions",
      byo.key,
      { model: "gpt-4.1", messages, mock: { status: 401 } },
      { "x-planto-provider-key": "sk-user-own-b222" },
    );
    const body = await expectEnvelope(res, 401, "upstream_error");
    expect(body.error.message).toContain("b222");
  });

  it("every error response carries x-request-id, the id of the call's usage record when there is one", async () => {
    await expectEnvelope(await gw.post("/v1/chat/completions", null, { messages }), 401, "invalid_api_key");
    await expectEnvelope(await gw.post("/v1/nope", org.key, {}), 404, "not_found");
    await expectEnvelope(await gw.post("/v1/chat/completions", org.key, "{"), 400, "invalid_request_error");
    await expectEnvelope(await fetch(`${gw.url}/admin/orgs/x`), 401, "invalid_api_key");
    const poor = await gw.org({ credits: "0.0000001" });
    await expectEnvelope(
      await gw.post("/v1/chat/completions", poor.key, { model: "gpt-4.1", messages }),
      402,
      "cloud_insufficient_credits",
    );
    const failed = await gw.post("/v1/chat/completions", org.key, {
      model: "gpt-4.1",
      messages,
      mock: { status: 500 },
    });
    await expectEnvelope(failed, 502, "upstream_error");
    const id = failed.headers.get("x-request-id") as string;
    await gw.services.flusher.drain();
    const rows = await gw.services.database.db.select().from(usageRecords).where(eq(usageRecords.id, id));
    expect(rows).toHaveLength(1);
  });

  it("a prompt clearly over the model's context window is refused before it goes upstream", async () => {
    const before = { upstream: gw.mock.requests.length, balance: await balance() };
    // o3 takes 200,000 tokens; 1.7 MB of text is at least 212,500 of them however it is tokenized.
    const res = await gw.post("/v1/chat/completions", org.key, {
      model: "o3",
      messages: [{ role: "user", content: "word ".repeat(340_000) }],
    });
    const body = await expectEnvelope(res, 400, "context_length_exceeded");
    expect(body.error.param).toBe("messages");
    expect(body.error.type).toBe("invalid_request_error");
    const apply = await gw.post("/v1/code/apply", org.key, {
      model: "relace-apply-3",
      initialCode: "x".repeat(2_100_000),
      editSnippet: "y",
    });
    await expectEnvelope(apply, 400, "context_length_exceeded");
    expect(gw.mock.requests.length).toBe(before.upstream);
    expect(await balance()).toBe(before.balance);
  });

  it("an Idempotency-Key reused with any other body is a 409; the same body is the first credit again", async () => {
    const credit = (body: unknown) =>
      gw.admin("POST", `/admin/orgs/${org.id}/credits`, body, { "idempotency-key": "reuse-1" });
    const before = await balance();
    const first = await credit({ amount: "1.00", creditType: "admin_grant" });
    expect(first.status).toBe(201);
    expect((await credit({ amount: "1.00", creditType: "admin_grant" })).status).toBe(200);
    const otherType = await credit({ amount: "1.00", creditType: "purchase" });
    expect(otherType.status).toBe(409);
    expect(otherType.headers.get("x-request-id")).toMatch(/^req_/);
    expect((await credit({ amount: "2.00", creditType: "admin_grant" })).status).toBe(409);
    expect(await balance()).toBe((before as number) + 1_000_000_000);
  });
});
