import { GatewayError } from "../core/errors.ts";
import type { JsonObject } from "./providers/types.ts";

/**
 * Deepest nesting of arrays and objects a request may have. Real requests stay far below it (a
 * tool's JSON schema rarely passes 20); past it, the recursive walks a request meets
 * (`JSON.stringify`, the SDKs upstream) overflow the stack, which was a 500.
 */
export const MAX_JSON_DEPTH = 128;

/**
 * Whether JSON text nests deeper than `max`; a scan of the bytes, before anything recursive runs
 * (and before JSON.parse, which would spend a second on a 2 MB body of `[`). A string is skipped
 * whole: its closing quote found with `indexOf` (a native search) rather than byte by byte in
 * JavaScript, which cost ~19 ns a byte, 1.8 ms for a 94 KB prompt; this scan takes ~0.1 ms there.
 * Text that is not valid JSON (a string never closed) passes, for JSON.parse to refuse.
 */
export function nestsDeeperThan(bytes: Uint8Array, max: number): boolean {
  const n = bytes.length;
  if (n <= max) return false;
  let depth = 0;
  for (let i = 0; i < n; i++) {
    const b = bytes[i];
    if (b === 0x22) {
      // The next quote not escaped: one preceded by an even run of backslashes.
      for (;;) {
        i = bytes.indexOf(0x22, i + 1);
        if (i < 0) return false;
        let k = i - 1;
        while (bytes[k] === 0x5c) k--;
        if ((i - 1 - k) % 2 === 0) break;
      }
    } else if (b === 0x7b || b === 0x5b) {
      if (++depth > max) return true;
    } else if (b === 0x7d || b === 0x5d) {
      depth--;
    }
  }
  return false;
}

/** Parses a request body as a JSON object, or fails with the contract's 400. */
export function parseJsonObject(bytes: Uint8Array): JsonObject {
  if (nestsDeeperThan(bytes, MAX_JSON_DEPTH)) {
    throw new GatewayError(
      "invalid_request_error",
      `request body nests deeper than ${MAX_JSON_DEPTH} levels`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
  } catch {
    throw new GatewayError("invalid_request_error", "request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new GatewayError("invalid_request_error", "request body must be a JSON object");
  }
  return value as JsonObject;
}

function invalid(param: string, message: string): GatewayError {
  return new GatewayError("invalid_request_error", message, { param });
}

export function requireString(body: JsonObject, field: string): string {
  const v = body[field];
  if (v === undefined || v === null) throw invalid(field, `missing required parameter: '${field}'`);
  if (typeof v !== "string" || v.length === 0) throw invalid(field, `'${field}' must be a non-empty string`);
  return v;
}

export function optionalBoolean(body: JsonObject, field: string): boolean | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw invalid(field, `'${field}' must be a boolean`);
  return v;
}

export function optionalPositiveInt(body: JsonObject, field: string): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
    throw invalid(field, `'${field}' must be a positive integer`);
  }
  return v;
}

export function optionalObject(body: JsonObject, field: string): JsonObject | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) throw invalid(field, `'${field}' must be an object`);
  return v as JsonObject;
}

/** `messages`: a non-empty array of objects, each with a string `role`. */
export function requireMessages(body: JsonObject): JsonObject[] {
  const v = body.messages;
  if (v === undefined || v === null) throw invalid("messages", "missing required parameter: 'messages'");
  if (!Array.isArray(v) || v.length === 0) throw invalid("messages", "'messages' must be a non-empty array");
  v.forEach((m, i) => {
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      throw invalid(`messages[${i}]`, `'messages[${i}]' must be an object`);
    }
    if (typeof (m as JsonObject).role !== "string") {
      throw invalid(`messages[${i}].role`, `'messages[${i}].role' must be a string`);
    }
    const content = (m as JsonObject).content;
    if (content !== undefined && content !== null && typeof content !== "string" && !Array.isArray(content)) {
      throw invalid(
        `messages[${i}].content`,
        `'messages[${i}].content' must be a string or an array of parts`,
      );
    }
  });
  return v as JsonObject[];
}
