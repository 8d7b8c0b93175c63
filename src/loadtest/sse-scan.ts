/**
 * Reads a chat completion stream just enough for a load test: when the first content arrived,
 * the final usage frame (with the `cost` the gateway adds), a `data: {"error":…}` frame, and
 * `[DONE]`. JSON is parsed only until the first content frame and then only for frames that can
 * carry usage or an error, so a long stream costs a substring search per frame, not a parse.
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

/** The code of an error object: its `code` (contract codes are strings), else its `type`. */
export function errorCodeOf(error: unknown): string {
  const e = objectOf(error);
  if (!e) return typeof error === "string" && error ? error : "unknown_error";
  if (typeof e.code === "string" && e.code) return e.code;
  if (typeof e.code === "number") return `upstream_${e.code}`;
  if (typeof e.type === "string" && e.type) return e.type;
  return "unknown_error";
}

export class SseScan {
  /** performance.now() of the first frame with non-empty content. */
  firstContentAt: number | undefined;
  usage: StreamUsage | undefined;
  /** The code of the first in-stream error frame. */
  error: string | undefined;
  done = false;
  private readonly decoder = new TextDecoder();
  private carry = "";

  push(chunk: Uint8Array, now: number): void {
    const text = this.carry + this.decoder.decode(chunk, { stream: true });
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl < 0) break;
      this.line(text.charCodeAt(nl - 1) === 13 ? text.slice(start, nl - 1) : text.slice(start, nl), now);
      start = nl + 1;
    }
    this.carry = start === 0 ? text : text.slice(start);
  }

  /** Call at the end of the body: a last line without its newline still counts. */
  end(now: number): void {
    const rest = this.carry + this.decoder.decode();
    this.carry = "";
    if (rest) this.line(rest, now);
  }

  private line(line: string, now: number): void {
    if (!line.startsWith("data:")) return; // comments (": OPENROUTER PROCESSING"), event:, id:, blank
    const payload = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
    if (payload === "[DONE]") {
      this.done = true;
      return;
    }
    const interesting =
      this.firstContentAt === undefined || payload.includes('"usage":{') || payload.includes('"error"');
    if (!interesting) return;
    let frame: Json | undefined;
    try {
      frame = objectOf(JSON.parse(payload));
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
