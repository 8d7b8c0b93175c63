import type { Server } from "node:http";
import type { Duplex } from "node:stream";
import { errorBody, GatewayError, JSON_CONTENT_TYPE } from "./core/errors.ts";
import { newRequestId } from "./gateway/request-id.ts";

/** How long a refused connection may go on sending before it is closed. */
const DRAIN_MS = 5_000;

/**
 * Requests Node's HTTP parser refuses before the app sees them (headers over `maxHeaderSize`, too
 * many of them, a malformed request line) get the contract's JSON envelope instead of Node's bare
 * 431/400. The rest of what the client sends is read and dropped before the connection closes:
 * closing with unread bytes makes the kernel reset it, and the client would see a reset instead of
 * the answer (a 1 MB header did).
 */
export function jsonClientErrors(server: Server): void {
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable || err.code === "ECONNRESET") {
      socket.destroy();
      return;
    }
    const headers = err.code === "HPE_HEADER_OVERFLOW";
    const gw = headers
      ? new GatewayError("invalid_request_error", "request headers are too large or too many", {
          status: 431,
        })
      : new GatewayError("invalid_request_error", "malformed HTTP request");
    const body = errorBody(gw);
    const reason = headers ? "Request Header Fields Too Large" : "Bad Request";
    socket.on("data", () => {});
    socket.on("error", () => {});
    socket.end(
      `HTTP/1.1 ${gw.status} ${reason}\r\ncontent-type: ${JSON_CONTENT_TYPE}\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${newRequestId()}\r\n` +
        `connection: close\r\n\r\n${body}`,
    );
    setTimeout(() => socket.destroy(), DRAIN_MS).unref();
  });
}
