/**
 * Reads a chat completion stream just enough for a load test: when the first content arrived,
 * the final usage frame (with the `cost` the gateway adds), a `data: {"error":…}` frame, and
 * whether it ended with `[DONE]`. It works on the bytes: lines are decoded and parsed one by one
 * only until the first content frame; after that a native byte search finds the few lines that can
 * carry usage or an error, so a long stream costs a memchr, not a decode and a parse per frame.
 */
export interface StreamUsage {
  promptTokens: number | undefined;
  completionTokens: number | undefined;
  /** USD, as the gateway sends it (a number). */
  cost: number | undefined;
}

type Json = Record<string, unknown>;

const objectOf = (v: unknown): Json | undefined =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : undefined;

/**
 * The code of an error object: its `code` (contract codes are strings); for OpenRouter's shape,
 * whose `code` is a number (the gateway's own mid-stream frame), `metadata.type`; else its `type`.
 */
export function errorCodeOf(error: unknown): string {
  const e = objectOf(error);
  if (!e) return typeof error === "string" && error ? error : "unknown_error";
  if (typeof e.code === "string" && e.code) return e.code;
  const metadataType = objectOf(e.metadata)?.type;
  if (typeof metadataType === "string" && metadataType) return metadataType;
  if (typeof e.code === "number") return `upstream_${e.code}`;
  if (typeof e.type === "string" && e.type) return e.type;
  return "unknown_error";
}

const NL = 10;
const CR = 13;
const USAGE = Buffer.from('"usage":{');
const ERROR = Buffer.from('"error"');
const DATA = Buffer.from("data:");

export class SseScan {
  /** performance.now() of the first frame with non-empty content. */
  firstContentAt: number | undefined;
  usage: StreamUsage | undefined;
  /** The code of the first in-stream error frame. */
  error: string | undefined;
  /** The last line with anything on it was `data: [DONE]`. */
  done = false;
  /** The bytes of an unfinished line (always the start of a line). */
  private carry: Buffer | undefined;

  push(chunk: Uint8Array, now: number): void {
    let data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.carry) {
      data = Buffer.concat([this.carry, data]);
      this.carry = undefined;
    }
    const last = data.lastIndexOf(NL);
    if (last < 0) {
      this.carry = Buffer.from(data); // a copy: the chunk's memory is not ours to keep
      return;
    }
    this.scan(data, last, now);
    if (last + 1 < data.length) this.carry = Buffer.from(data.subarray(last + 1));
  }

  /** Call at the end of the body: a last line without its newline still counts. */
  end(now: number): void {
    const rest = this.carry;
    this.carry = undefined;
    if (rest?.length) this.scan(rest, rest.length, now);
  }

  /** The complete lines in data[0, to): data starts at a line start, `to` is a line end. */
  private scan(data: Buffer, to: number, now: number): void {
    let pos = 0;
    while (this.firstContentAt === undefined && pos < to) {
      let nl = data.indexOf(NL, pos);
      if (nl < 0 || nl > to) nl = to;
      this.line(data, pos, nl, now);
      pos = nl + 1;
    }
    if (pos < to) {
      for (const needle of [USAGE, ERROR]) {
        for (let at = data.indexOf(needle, pos); at >= 0 && at < to; ) {
          const start = data.lastIndexOf(NL, at) + 1;
          let nl = data.indexOf(NL, at);
          if (nl < 0 || nl > to) nl = to;
          this.line(data, start, nl, now);
          at = data.indexOf(needle, nl);
        }
      }
    }
    this.noteLastLine(data, to);
  }

  /** `done` follows the last line in data[0, to) that is not blank. */
  private noteLastLine(data: Buffer, to: number): void {
    let end = to;
    while (end > 0 && (data[end - 1] === NL || data[end - 1] === CR)) end--;
    if (end === 0) return; // only blank lines: the last one seen before still counts
    const start = data.lastIndexOf(NL, end - 1) + 1;
    const text = end - start <= 14 ? data.toString("latin1", start, end) : "";
    this.done = text === "data: [DONE]" || text === "data:[DONE]";
  }

  private line(data: Buffer, start: number, end: number, now: number): void {
    if (end > start && data[end - 1] === CR) end--;
    // comments (": OPENROUTER PROCESSING"), event:, id:, blank lines
    if (end - start < DATA.length || data.compare(DATA, 0, DATA.length, start, start + DATA.length) !== 0)
      return;
    const from = start + DATA.length + (data[start + DATA.length] === 32 ? 1 : 0);
    if (end - from === 6 && data.toString("latin1", from, end) === "[DONE]") return;
    let frame: Json | undefined;
    try {
      frame = objectOf(JSON.parse(data.toString("utf8", from, end)));
    } catch {
      return; // not JSON: nothing a caller could read either
    }
    if (!frame) return;
    if (frame.error !== undefined && frame.error !== null) {
      this.error ??= errorCodeOf(frame.error);
    }
    const usage = objectOf(frame.usage);
    if (usage) {
      this.usage = {
        promptTokens: typeof usage.prompt_tokens === "number" ? usage.prompt_tokens : undefined,
        completionTokens: typeof usage.completion_tokens === "number" ? usage.completion_tokens : undefined,
        cost: typeof usage.cost === "number" ? usage.cost : undefined,
      };
    }
    if (this.firstContentAt === undefined && Array.isArray(frame.choices)) {
      for (const choice of frame.choices) {
        const delta = objectOf(objectOf(choice)?.delta);
        const content = delta?.content ?? delta?.reasoning ?? delta?.reasoning_content;
        if (typeof content === "string" && content.length > 0) {
          this.firstContentAt = now;
          break;
        }
      }
    }
  }
}
