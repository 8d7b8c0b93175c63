import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFetchUpstream, UpstreamError } from "../../src/gateway/upstream.ts";

/**
 * The fetch client (Workers): `/long` answers at once and streams 15 frames 40 ms apart, longer
 * than the headers timeout below (300 ms); `/silent` sends one frame and then nothing.
 */
let server: Server;
let base: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.flushHeaders();
    if (req.url === "/silent") {
      res.write('data: {"choices":[]}\n\n');
      return;
    }
    let sent = 0;
    const timer = setInterval(() => {
      res.write(`data: {"n":${sent}}\n\n`);
      if (++sent === 15) {
        clearInterval(timer);
        res.end();
      }
    }, 40);
    res.on("close", () => clearInterval(timer));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // Node loads fetch's internals on first use, which can take longer than the timeout under test.
  await (await fetch(`${base}/long`)).text();
});
afterAll(() => {
  server.closeAllConnections();
  return new Promise<void>((resolve) => server.close(() => resolve()));
});

const call = (path: string, idleTimeoutMs: number) =>
  createFetchUpstream({ headersTimeoutMs: 300, idleTimeoutMs }).request({
    url: base + path,
    headers: { "content-type": "application/json" },
    body: "{}",
    signal: new AbortController().signal,
  });

describe("the fetch upstream client", () => {
  it("lets a body that keeps talking run past the headers timeout", async () => {
    const res = await call("/long", 5_000);
    const text = new TextDecoder().decode(await res.bytes());
    expect(text.match(/data: /g)).toHaveLength(15);
  });

  it("fails a body that falls silent for the idle timeout, as a timeout", async () => {
    const res = await call("/silent", 150);
    const failure = await res
      .read(() => undefined)
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(failure).toBeInstanceOf(UpstreamError);
    expect((failure as UpstreamError).failure).toBe("timeout");
  });
});
