import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeUpstream } from "../../src/gateway/upstream-node.ts";

/** An upstream that streams a frame every 5 ms until the connection closes, and counts closes. */
let server: Server;
let url: string;
let closed = 0;
beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": "text/event-stream" });
    const timer = setInterval(() => res.write('data: {"choices":[]}\n\n'), 5);
    res.on("close", () => {
      clearInterval(timer);
      closed++;
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/**
 * Waits for `check`. The upstream seeing its connection close is also the barrier for "throws
 * nothing else": the body's destroy error is emitted on a tick queued before the socket is even
 * closed, so an unheard one has been thrown by the time the server sees the close.
 */
async function until(check: () => boolean): Promise<void> {
  // Bounded by the test's timeout, not a count of polls: a busy machine is slow, not wrong.
  for (let i = 0; i < 2_000 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(check()).toBe(true);
}

describe("the Node upstream client", () => {
  const upstream = createNodeUpstream({ headersTimeoutMs: 2_000, idleTimeoutMs: 2_000 });
  afterAll(() => upstream.close());
  const call = () =>
    upstream.request({
      url,
      headers: { "content-type": "application/json" },
      body: "{}",
      signal: new AbortController().signal,
    });

  // A failing consumer must fail its own call only: the body's destroy error has a listener, so it
  // is not thrown at the process (vitest fails a run on any uncaught error).
  it("rejects the read when the chunk consumer throws, closes the upstream, and throws nothing else", async () => {
    const before = closed;
    const res = await call();
    let seen = 0;
    await expect(
      res.read(() => {
        if (++seen === 2) throw new Error("consumer bug");
        return undefined;
      }),
    ).rejects.toThrow();
    await until(() => closed > before);
  });

  it("rejects the read when the consumer's write fails, and closes the upstream", async () => {
    const before = closed;
    const res = await call();
    await expect(res.read(() => Promise.reject(new Error("client write failed")))).rejects.toThrow();
    await until(() => closed > before);
  });
});
