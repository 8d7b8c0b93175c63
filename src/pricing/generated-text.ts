import type { JsonObject } from "../core/usage.ts";

const CHAT_CHUNK = '"object":"chat.completion.chunk"';
/** The text fields of a chat delta (or message); a tool call's text is its function's `arguments`. */
const DELTA_TEXT_KEYS = ["content", "reasoning", "reasoning_content"] as const;
/** One of those keys, or a tool call's arguments, with its JSON string value. */
const CHUNK_TEXT = new RegExp(
  `"(?:${[...DELTA_TEXT_KEYS, "arguments"].join("|")})":"((?:[^"\\\\]|\\\\.)*)"`,
  "g",
);

/**
 * What collectGeneratedText finds in one frame of a stream, faster for chat completion chunks,
 * which are all but a handful of a chat stream's frames: their text is read off the frame's JSON
 * without parsing it (~0.4 µs a frame against ~1.3). In a chunk, those keys with a string value
 * are only the delta's content, reasoning and reasoning_content and its tool calls' arguments (an
 * unescaped `"` cannot occur inside a JSON string, so a match is always a key). Any other frame
 * is parsed.
 */
export function collectFrameText(payload: string, out: string[]): void {
  if (!payload.includes(CHAT_CHUNK)) {
    collectGeneratedText(payload, out);
    return;
  }
  CHUNK_TEXT.lastIndex = 0;
  for (let m = CHUNK_TEXT.exec(payload); m !== null; m = CHUNK_TEXT.exec(payload)) {
    const literal = m[1] as string;
    out.push(literal.includes("\\") ? (JSON.parse(`"${literal}"`) as string) : literal);
  }
}

/** The generated text in a chunk or response: content, reasoning, tool-call arguments, merged code. */
export function collectGeneratedText(payload: string, out: string[]): void {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return;
  }
  if (typeof value !== "object" || value === null) return;
  const obj = value as JsonObject;
  if (typeof obj.mergedCode === "string") out.push(obj.mergedCode);
  if (typeof obj.type === "string") {
    collectResponsesText(obj, out);
    return;
  }
  if (obj.object === "response") {
    collectResponseOutput(obj.output, out);
    return;
  }
  if (!Array.isArray(obj.choices)) return;
  for (const choice of obj.choices as JsonObject[]) {
    const part = (choice?.delta ?? choice?.message) as JsonObject | undefined;
    if (!part) continue;
    for (const key of DELTA_TEXT_KEYS) {
      const text = part[key];
      if (typeof text === "string") out.push(text);
    }
    if (Array.isArray(part.tool_calls)) {
      for (const call of part.tool_calls as JsonObject[]) {
        const fn = call?.function as JsonObject | undefined;
        if (typeof fn?.arguments === "string") out.push(fn.arguments);
      }
    }
  }
}

/**
 * A Responses API stream event: the generated text arrives in `*.delta` events (output text,
 * refusals, reasoning summaries, function-call arguments); the other events repeat it or carry none.
 */
function collectResponsesText(event: JsonObject, out: string[]): void {
  if (!String(event.type).endsWith(".delta")) return;
  if (typeof event.delta === "string") out.push(event.delta);
}

/** A plain Responses API body's `output` items: message text, reasoning summaries, call arguments. */
function collectResponseOutput(output: unknown, out: string[]): void {
  if (!Array.isArray(output)) return;
  for (const item of output as JsonObject[]) {
    if (typeof item?.arguments === "string") out.push(item.arguments);
    for (const key of ["content", "summary"] as const) {
      const parts = item?.[key];
      if (!Array.isArray(parts)) continue;
      for (const part of parts as JsonObject[]) if (typeof part?.text === "string") out.push(part.text);
    }
  }
}
