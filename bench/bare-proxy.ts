import { Agent, createServer, request } from "node:http";
import { parseArgs } from "node:util";

/**
 * The baseline the gateway is measured against: a bare `node:http` pipe proxy. It forwards method,
 * path, headers and body to the upstream and pipes the answer back, nothing else.
 */
const { values } = parseArgs({ options: { port: { type: "string" }, upstream: { type: "string" } } });
const upstream = new URL(values.upstream ?? "http://127.0.0.1:9999");
const agent = new Agent({ keepAlive: true, maxSockets: 256 });

const server = createServer((req, res) => {
  const proxied = request(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
      agent,
    },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    },
  );
  proxied.on("error", () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  res.on("close", () => {
    if (!res.writableFinished) proxied.destroy();
  });
  req.pipe(proxied);
});

server.listen(Number(values.port ?? 0), "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(
    `${JSON.stringify({ port: typeof address === "object" && address ? address.port : 0 })}\n`,
  );
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
