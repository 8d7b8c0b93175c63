import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";

/** An email as the mock provider accepted it. */
export interface MockEmail {
  id: string;
  from: string;
  to: string[];
  subject: string;
  text: string;
  idempotencyKey: string | undefined;
}

export interface MockEmailProvider {
  /** The send endpoint, for EMAIL_API_URL. */
  url: string;
  apiKey: string;
  /** Every request that reached it, accepted or not. */
  requests: Array<{ idempotencyKey: string | undefined; status: number; body: Record<string, unknown> }>;
  /** The emails it actually sent: one per idempotency key. */
  sent: MockEmail[];
  sentTo(address: string): MockEmail[];
  /** The next `count` sends are answered with `status` (and the provider's error body). */
  failNext(count: number, status: number): void;
  close(): Promise<void>;
}

/**
 * A stand-in for Resend's `POST /emails`: Bearer auth, and its Idempotency-Key semantics (a repeat
 * with the same key and body gets the first answer and sends nothing; the same key with another
 * body is a 409 invalid_idempotent_request). The outside world of the notifier, for tests.
 */
export async function startMockEmailProvider(): Promise<MockEmailProvider> {
  const apiKey = "re_test_key";
  const requests: MockEmailProvider["requests"] = [];
  const sent: MockEmail[] = [];
  const byKey = new Map<string, { body: string; id: string }>();
  let failures: { count: number; status: number } = { count: 0, status: 500 };

  const read = (req: IncomingMessage) =>
    new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    });

  const server = createServer(async (req, res) => {
    const raw = await read(req);
    const key = req.headers["idempotency-key"] as string | undefined;
    const answer = (status: number, body: Record<string, unknown>) => {
      let parsed: Record<string, unknown> = {};
      try {
        parsed = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        // recorded as an empty body
      }
      requests.push({ idempotencyKey: key, status, body: parsed });
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method !== "POST" || req.url !== "/emails") return answer(404, { name: "not_found" });
    if (req.headers.authorization !== `Bearer ${apiKey}`) {
      return answer(403, { statusCode: 403, name: "invalid_api_key", message: "API key is invalid" });
    }
    if (failures.count > 0) {
      failures.count -= 1;
      return answer(failures.status, {
        statusCode: failures.status,
        name: failures.status === 422 ? "validation_error" : "application_error",
        message: failures.status === 422 ? "Invalid `to` field." : "Something went wrong.",
      });
    }
    if (key !== undefined) {
      const first = byKey.get(key);
      if (first && first.body !== raw) {
        return answer(409, {
          statusCode: 409,
          name: "invalid_idempotent_request",
          message: "Same idempotency key used with a different request payload.",
        });
      }
      if (first) return answer(200, { id: first.id });
    }
    const body = JSON.parse(raw) as { from: string; to: string[] | string; subject: string; text: string };
    const id = `email_${sent.length + 1}_${Math.random().toString(36).slice(2, 10)}`;
    sent.push({
      id,
      from: body.from,
      to: Array.isArray(body.to) ? body.to : [body.to],
      subject: body.subject,
      text: body.text,
      idempotencyKey: key,
    });
    if (key !== undefined) byKey.set(key, { body: raw, id });
    return answer(200, { id });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/emails`,
    apiKey,
    requests,
    sent,
    sentTo: (address) => sent.filter((m) => m.to.includes(address)),
    failNext(count, status) {
      failures = { count, status };
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
